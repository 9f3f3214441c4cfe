"""The sans-IO protocol core: no sockets, threads or clocks; the caller passes `now` in."""
