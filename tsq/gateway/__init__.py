"""The composition root: the engine runner, the bridge wiring, the control socket, the config and the
commands that run them (`tsq gateway`, `tsq sync`, `tsq status`, `tsq waitsync`, `tsq config`)."""
