"""Start a program with a /dev/shm of its own: `python private_shm.py PROGRAM ARGS...`.

Why: Triton's python backend keeps every request and response in shared-memory regions under /dev/shm,
and creates them 0644 (it chmods them itself, whatever the umask). Narrowing them afterwards leaves a
window in which another local user can open one and keep reading through that descriptor after the
chmod (issue 23, item 2). Instead tritonserver runs in a mount namespace of its own with a fresh tmpfs,
mode 0700, on /dev/shm: its regions live there, other users cannot even list them (reaching them by
/proc/PID/root needs the right to trace the server), at every moment: start, swaps and restarts. The
python stubs are tritonserver's children and share it. When the last process of the namespace exits,
the tmpfs and whatever a crash left in it are gone.

How: unshare(2) a mount namespace (as root) or a user + mount namespace mapping the user to itself (as
anyone else, where the kernel allows unprivileged user namespaces), make every mount private so
nothing propagates back, mount the tmpfs, then exec the program: same pid, so the supervisor, the state
file and `dnc stop` see tritonserver itself. Run as a separate interpreter (not a preexec_fn) because
unshare of a user namespace needs a single-threaded process, and so that a failure is written to the
server log in words and exits with FAILED.

Standard library only, run by path: it must not import the project (the server's interpreter starts it).
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
FAILED = 97  # exit status of a launch that could not make the namespace (server.py reads it)
FLAG = "--shared-shm"  # the `dnc serve` flag that starts without it, named in the failure message


def _call(libc, what: str, result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter() -> None:
    """Move this (single-threaded) process into a mount namespace whose /dev/shm is a private tmpfs."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]  # (mount's flags are an unsigned long: say so, not an int)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _call(libc, "unshare(mount namespace)", libc.unshare(CLONE_NEWNS))
    else:  # the capability to mount exists only inside a user namespace of our own, until exec
        _call(libc, "unshare(user + mount namespace)", libc.unshare(CLONE_NEWNS | CLONE_NEWUSER))
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    _call(libc, "make mounts private", libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
    _call(libc, "mount a tmpfs on /dev/shm",
          libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=0700"))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: private_shm.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        enter()
    except OSError as e:
        print(f"dnc: cannot give tritonserver a private /dev/shm ({e.strerror or e}); its shared memory would be "
              f"open to other local users while it starts. Where /dev/shm is already this server's alone (a "
              f"container of its own), start it with `dnc serve {FLAG}`", file=sys.stderr, flush=True)
        return FAILED
    os.execv(argv[0], argv)
    return FAILED  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
