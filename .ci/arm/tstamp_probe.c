/* Which kernel socket timestamps reach this process: the probe the arm lanes run natively, under
 * qemu-user and under qemu-system, to decide where tests/clock/test_udp.py can pass.
 *
 * Checks, each on a fresh loopback UDP pair (127.0.0.1), one line each ("CHECK <name> ok|FAIL ..."):
 *   rx-timestampns-old/new  SO_TIMESTAMPNS_OLD/_NEW: SCM_TIMESTAMPNS cmsg, timespec within [send, recv]
 *   rx-timestamping-old/new SO_TIMESTAMPING_OLD/_NEW (RX_SOFTWARE|SOFTWARE): scm_timestamping ts[0]
 *   tx-errqueue-old/new     SO_TIMESTAMPING (TX_SOFTWARE|OPT_ID|OPT_TSONLY): MSG_ERRQUEUE gives the
 *                           timestamp cmsg plus IP_RECVERR with ee_errno ENOMSG, origin TIMESTAMPING
 *   siocgstampns-old/new    SIOCGSTAMPNS_OLD/_NEW ioctl after a receive
 * The cmsg payload is decoded by its type as the kernel defines it: *_OLD = two native longs,
 * *_NEW = two 64-bit fields. Exit status: the number of FAILs. Build: cc -std=gnu99 -o probe probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h> /* before linux/errqueue.h, which uses struct timespec */
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_TIMESTAMPNS_OLD
#define SO_TIMESTAMPNS_OLD 35
#define SO_TIMESTAMPING_OLD 37
#endif
#ifndef SO_TIMESTAMPNS_NEW
#define SO_TIMESTAMPNS_NEW 64
#define SO_TIMESTAMPING_NEW 65
#endif
#ifndef SIOCGSTAMPNS_OLD
#define SIOCGSTAMPNS_OLD 0x8907
#endif
#define SIOCGSTAMPNS_NEW_ _IOR(0x89, 0x07, long long[2])

static int failures;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void report(const char* name, int ok, const char* why) {
    printf("CHECK %-20s %s%s%s\n", name, ok ? "ok" : "FAIL", why[0] ? " " : "", why);
    if (!ok) failures++;
}

static int is_new(int type) { return type == SO_TIMESTAMPNS_NEW || type == SO_TIMESTAMPING_NEW; }

/* the first timespec of a timestamp cmsg, by its type; 0 if none */
static int64_t cmsg_ns(struct cmsghdr* c) {
    unsigned char* d = CMSG_DATA(c);
    size_t have = c->cmsg_len - CMSG_LEN(0);
    if (is_new(c->cmsg_type)) {
        int64_t v[2];
        if (have < sizeof v) return 0;
        memcpy(v, d, sizeof v);
        return v[0] * 1000000000 + v[1];
    }
    long v[2];
    if (have < sizeof v) return 0;
    memcpy(v, d, sizeof v);
    return (int64_t)v[0] * 1000000000 + v[1];
}

static void dump(struct msghdr* m, char* out, size_t n) {
    size_t used = 0;
    out[0] = 0;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        used += snprintf(out + used, n - used, "[level %d type %d len %zu:", c->cmsg_level, c->cmsg_type,
                         (size_t)c->cmsg_len);
        for (size_t i = 0; i < c->cmsg_len - CMSG_LEN(0) && i < 24 && used < n - 4; i++)
            used += snprintf(out + used, n - used, "%02x", CMSG_DATA(c)[i]);
        used += snprintf(out + used, n - used, "] ");
        if (used >= n - 8) break;
    }
    if (m->msg_flags & MSG_CTRUNC) snprintf(out + used, n - used, "(MSG_CTRUNC)");
}

static int pair(int* rx, int* tx) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    *rx = socket(AF_INET, SOCK_DGRAM, 0);
    *tx = socket(AF_INET, SOCK_DGRAM, 0);
    if (*rx < 0 || *tx < 0 || bind(*rx, (struct sockaddr*)&a, sizeof a) || getsockname(*rx, (struct sockaddr*)&a, &len)
        || connect(*tx, (struct sockaddr*)&a, sizeof a))
        return -1;
    return 0;
}

static ssize_t recv_cmsg(int fd, int flags, struct msghdr* m, char* buf, size_t n, char* ctl, size_t cn) {
    static struct iovec iov;
    iov.iov_base = buf;
    iov.iov_len = n;
    memset(m, 0, sizeof *m);
    m->msg_iov = &iov;
    m->msg_iovlen = 1;
    m->msg_control = ctl;
    m->msg_controllen = cn;
    return recvmsg(fd, m, flags);
}

/* RX: the option turns stamping on; the first packets after the first enable may go unstamped
 * (net_enable_timestamp is deferred), so up to 50 tries */
static void rx_check(const char* name, int option, int value, int want_type) {
    int rx, tx;
    char buf[64], ctl[512], why[600];
    struct msghdr m;
    if (pair(&rx, &tx) || setsockopt(rx, SOL_SOCKET, option, &value, sizeof value)) {
        snprintf(why, sizeof why, "setsockopt(%d): %s", option, strerror(errno));
        report(name, 0, why);
        return;
    }
    for (int i = 0; i < 50; i++) {
        int64_t before = now_ns();
        send(tx, "x", 1, 0);
        if (recv_cmsg(rx, 0, &m, buf, sizeof buf, ctl, sizeof ctl) < 0) break;
        int64_t after = now_ns();
        for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == want_type) {
                int64_t t = cmsg_ns(c);
                dump(&m, why, sizeof why);
                if (t >= before && t <= after) {
                    report(name, 1, why);
                } else {
                    char w2[700];
                    snprintf(w2, sizeof w2, "stamp %lld outside [%lld, %lld]: %s", (long long)t,
                             (long long)before, (long long)after, why);
                    report(name, 0, w2);
                }
                close(rx), close(tx);
                return;
            }
        }
        usleep(5000);
    }
    dump(&m, why, sizeof why);
    char w2[700];
    snprintf(w2, sizeof w2, "no cmsg type %d in 50 packets; last control data: %s", want_type,
             why[0] ? why : "(none)");
    report(name, 0, w2);
    close(rx), close(tx);
}

static void tx_check(const char* name, int option) {
    int rx, tx;
    char buf[64], ctl[512], why[600];
    struct msghdr m;
    int flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID
                | SOF_TIMESTAMPING_OPT_TSONLY;
    if (pair(&rx, &tx) || setsockopt(tx, SOL_SOCKET, option, &flags, sizeof flags)) {
        snprintf(why, sizeof why, "setsockopt(%d): %s", option, strerror(errno));
        report(name, 0, why);
        return;
    }
    int64_t before = now_ns();
    send(tx, "y", 1, 0);
    int64_t after = now_ns();
    struct pollfd p = {.fd = tx, .events = POLLERR};
    if (poll(&p, 1, 2000) != 1) {
        report(name, 0, "no POLLERR within 2 s (nothing on the error queue)");
        close(rx), close(tx);
        return;
    }
    if (recv_cmsg(tx, MSG_ERRQUEUE | MSG_DONTWAIT, &m, buf, sizeof buf, ctl, sizeof ctl) < 0) {
        snprintf(why, sizeof why, "recvmsg(MSG_ERRQUEUE): %s", strerror(errno));
        report(name, 0, why);
        close(rx), close(tx);
        return;
    }
    int64_t t = 0;
    int got_err = 0;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && (c->cmsg_type == SO_TIMESTAMPING_OLD || c->cmsg_type == SO_TIMESTAMPING_NEW))
            t = cmsg_ns(c);
        if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) {
            struct sock_extended_err e;
            memcpy(&e, CMSG_DATA(c), sizeof e);
            got_err = e.ee_errno == ENOMSG && e.ee_origin == SO_EE_ORIGIN_TIMESTAMPING && e.ee_info == SCM_TSTAMP_SND
                      && e.ee_data == 0;
        }
    }
    dump(&m, why, sizeof why);
    char w2[700];
    snprintf(w2, sizeof w2, "stamp %s, sock_extended_err %s: %s", (t >= before && t <= after) ? "in range" : "WRONG",
             got_err ? "ok" : "WRONG/absent", why);
    report(name, t >= before && t <= after && got_err, w2);
    close(rx), close(tx);
}

/* SIOCGSTAMPNS: the stamp of the last packet read. The first call switches stamping on (until then
 * the kernel answers with the time of the call), so: one call first, then a packet, then the check. */
static int stamp_ioctl(int fd, unsigned long request, int is_64, int64_t* t) {
    if (is_64) {
        long long v[2] = {0, 0};
        if (ioctl(fd, request, v)) return -1;
        *t = v[0] * 1000000000LL + v[1];
    } else {
        long v[2] = {0, 0};
        if (ioctl(fd, request, v)) return -1;
        *t = (int64_t)v[0] * 1000000000 + v[1];
    }
    return 0;
}

static void ioctl_check(const char* name, unsigned long request, int is_64) {
    int rx, tx;
    char buf[64], why[200];
    int64_t t = 0;
    if (pair(&rx, &tx)) {
        report(name, 0, "socket pair");
        return;
    }
    send(tx, "w", 1, 0);
    recv(rx, buf, sizeof buf, 0);
    if (stamp_ioctl(rx, request, is_64, &t)) {
        snprintf(why, sizeof why, "ioctl(%#lx): %s", request, strerror(errno));
        report(name, 0, why);
    } else {
        /* as for RX: until the deferred enable lands, packets are unstamped and the ioctl answers
         * with the time of the call; up to 50 packets */
        int64_t before = 0, after = 0;
        int ok = 0;
        for (int i = 0; i < 50 && !ok; i++) {
            before = now_ns();
            send(tx, "z", 1, 0);
            recv(rx, buf, sizeof buf, 0);
            after = now_ns();
            ok = stamp_ioctl(rx, request, is_64, &t) == 0 && t >= before && t <= after;
            if (!ok) usleep(5000);
        }
        snprintf(why, sizeof why, "stamp %lld %s [%lld, %lld]", (long long)t, ok ? "in" : "NOT in",
                 (long long)before, (long long)after);
        report(name, ok, why);
    }
    close(rx), close(tx);
}

int main(void) {
    printf("ABI sizeof(long)=%zu sizeof(time_t)=%zu sizeof(struct timespec)=%zu SO_TIMESTAMPNS=%d SO_TIMESTAMPING=%d\n",
           sizeof(long), sizeof(time_t), sizeof(struct timespec), SO_TIMESTAMPNS, SO_TIMESTAMPING);
    int rxflags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
    rx_check("rx-timestampns-old", SO_TIMESTAMPNS_OLD, 1, SO_TIMESTAMPNS_OLD);
    rx_check("rx-timestampns-new", SO_TIMESTAMPNS_NEW, 1, SO_TIMESTAMPNS_NEW);
    rx_check("rx-timestamping-old", SO_TIMESTAMPING_OLD, rxflags, SO_TIMESTAMPING_OLD);
    rx_check("rx-timestamping-new", SO_TIMESTAMPING_NEW, rxflags, SO_TIMESTAMPING_NEW);
    tx_check("tx-errqueue-old", SO_TIMESTAMPING_OLD);
    tx_check("tx-errqueue-new", SO_TIMESTAMPING_NEW);
    ioctl_check("siocgstampns-old", SIOCGSTAMPNS_OLD, 0);
    ioctl_check("siocgstampns-new", SIOCGSTAMPNS_NEW_, 1);
    printf("FAILURES %d\n", failures);
    return failures;
}
