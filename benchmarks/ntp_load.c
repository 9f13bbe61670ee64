/* NTP client load for chronyd's side of benchmarks/server_load.py.
 *
 *     cc -O2 -o ntp_load benchmarks/ntp_load.c && ./ntp_load 127.0.0.1 11123 CLIENTS SECONDS
 *
 * CLIENTS UDP sockets, each a closed loop like the QUIC driver's connections: one NTPv4 client
 * request (mode 3, 48 bytes) outstanding, the next sent when the answer (mode 4, origin timestamp
 * = our transmit timestamp) arrives; a request unanswered after 200 ms is sent again and counted
 * lost. Prints one line: "answered N lost M seconds S bytes_out B bytes_in B".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NTP_LEN 48
#define RESEND_NS 200000000LL

typedef struct {
    int fd;
    uint64_t xmt;        /* transmit timestamp of the outstanding request (our counter) */
    int64_t sent_ns;
} client_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t counter = 1;
static long long bytes_out = 0, bytes_in = 0;

static void send_request(client_t* c) {
    unsigned char pkt[NTP_LEN];
    memset(pkt, 0, sizeof pkt);
    pkt[0] = (0 << 6) | (4 << 3) | 3; /* LI 0, VN 4, mode 3 (client) */
    c->xmt = counter++;
    for (int i = 0; i < 8; i++) pkt[40 + i] = (unsigned char)(c->xmt >> (56 - 8 * i));
    c->sent_ns = now_ns();
    if (send(c->fd, pkt, sizeof pkt, 0) == NTP_LEN) bytes_out += NTP_LEN;
}

int main(int argc, char** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT CLIENTS SECONDS\n", argv[0]);
        return 2;
    }
    int nclients = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (nclients < 1 || seconds <= 0) {
        fprintf(stderr, "ntp_load: CLIENTS >= 1 and SECONDS > 0\n");
        return 2;
    }
    struct rlimit rl = { (rlim_t)nclients + 64, (rlim_t)nclients + 64 };
    setrlimit(RLIMIT_NOFILE, &rl); /* best effort: 1000 clients need more than the default 1024 */
    struct sockaddr_in server;
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
        fprintf(stderr, "ntp_load: %s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    int ep = epoll_create1(0);
    client_t* clients = calloc((size_t)nclients, sizeof *clients);
    if (ep < 0 || !clients) {
        perror("ntp_load");
        return 1;
    }
    for (int i = 0; i < nclients; i++) {
        clients[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (clients[i].fd < 0 || connect(clients[i].fd, (struct sockaddr*)&server, sizeof server) < 0) {
            perror("ntp_load: socket");
            return 1;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, clients[i].fd, &ev);
    }
    long long answered = 0, lost = 0;
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9), last_scan = start;
    for (int i = 0; i < nclients; i++) send_request(&clients[i]);
    struct epoll_event events[256];
    while (now_ns() < end) {
        int n = epoll_wait(ep, events, 256, 20);
        for (int k = 0; k < n; k++) {
            client_t* c = &clients[events[k].data.u32];
            unsigned char buf[512];
            ssize_t got;
            while ((got = recv(c->fd, buf, sizeof buf, 0)) > 0) {
                bytes_in += got;
                if (got < NTP_LEN || (buf[0] & 7) != 4) continue;
                uint64_t origin = 0;
                for (int i = 0; i < 8; i++) origin = (origin << 8) | buf[24 + i];
                if (origin != c->xmt) continue; /* a late answer to a request we re-sent */
                answered++;
                send_request(c);
            }
        }
        int64_t t = now_ns();
        if (t - last_scan > 50000000LL) {
            last_scan = t;
            for (int i = 0; i < nclients; i++) {
                if (t - clients[i].sent_ns > RESEND_NS) {
                    lost++;
                    send_request(&clients[i]);
                }
            }
        }
    }
    printf("answered %lld lost %lld seconds %.3f bytes_out %lld bytes_in %lld\n", answered, lost,
           (now_ns() - start) / 1e9, bytes_out, bytes_in);
    return 0;
}
