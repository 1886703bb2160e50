"""Confining the current process so that it can only compute (the sandbox's workers and its reply reader).

This module owns the one-way steps a process takes before it reads untrusted
bytes, and reports which of them the platform supports:
  * resource limits: address space, CPU seconds, file size (0 unless told), no core dumps;
  * no_new_privs, then Landlock (Linux >= 5.13): a ruleset that handles every
    filesystem right (and TCP bind/connect from ABI 4, abstract sockets and
    signals from ABI 6) with no rule allowing any, so no file can be opened,
    created, executed or changed and no TCP connection made;
  * seccomp (libseccomp through `pyseccomp`): open/exec/fork, sockets,
    tracing and filesystem-changing system calls fail with EPERM; threads
    are still allowed (numpy/pyarrow use them).
Either kernel layer alone stops opening files and starting programs; with
neither, only the resource limits and the allow-list remain, and `confine`
says so in what it returns. Nothing here can be undone by the process.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
from typing import Any

_PR_SET_NO_NEW_PRIVS = 38
_LANDLOCK_CREATE_RULESET, _LANDLOCK_RESTRICT_SELF = 444, 446  # the same number on every Linux architecture
_LANDLOCK_CREATE_RULESET_VERSION = 1
# Filesystem rights per ABI: 13 in ABI 1, REFER in 2, TRUNCATE in 3, IOCTL_DEV in 5.
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_FS_RIGHTS_LATEST = (1 << 16) - 1
_NET_BIND_AND_CONNECT_TCP = 0b11
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11

_CLONE_THREAD = 0x00010000
# Everything a pickle payload could use to reach outside the process.
_DENIED_SYSCALLS = (
    "open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at",
    "execve", "execveat", "fork", "vfork",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat",
    "truncate", "mknod", "mknodat", "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsmount", "open_tree", "move_mount",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "memfd_create", "personality",
)


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def set_resource_limits(max_bytes: int, max_cpu_seconds: int, max_file_bytes: int = 0) -> None:
    _limit(resource.RLIMIT_AS, max_bytes)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    # SIGXCPU at the soft limit (reported by the parent), SIGKILL a second later.
    resource.setrlimit(resource.RLIMIT_CPU, (max_cpu_seconds, max_cpu_seconds + 1)
                       if hard == resource.RLIM_INFINITY else (min(max_cpu_seconds, hard), hard))
    _limit(resource.RLIMIT_FSIZE, max_file_bytes)
    _limit(resource.RLIMIT_CORE, 0)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _no_new_privs(libc: Any) -> None:
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers, 0 if none (or not Linux)."""
    if platform.system() != "Linux":
        return 0
    libc = _libc()
    version = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _apply_landlock(libc: Any, abi: int) -> None:
    fields = [_FS_RIGHTS_BY_ABI.get(abi, _FS_RIGHTS_LATEST)]
    if abi >= 4:
        fields.append(_NET_BIND_AND_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX_AND_SIGNAL)
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        if libc.syscall(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _seccomp_module() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError):  # not installed, or libseccomp missing
        return None
    return pyseccomp


# Loaded now: pyseccomp finds libseccomp by running ldconfig, impossible once confined.
_SECCOMP = _seccomp_module()


def _apply_seccomp(seccomp: Any) -> None:
    denied = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in _DENIED_SYSCALLS:
        try:
            rules.add_rule(denied, name)
        except (OSError, ValueError, RuntimeError):  # not a system call on this architecture
            continue
    # New processes, but not new threads; clone3 hides its flags from seccomp,
    # so it answers ENOSYS and the C library falls back to clone.
    rules.add_rule(denied, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Signals only to this process.
    pid = os.getpid()
    rules.add_rule(denied, "kill", seccomp.Arg(0, seccomp.NE, pid))
    rules.add_rule(denied, "tgkill", seccomp.Arg(0, seccomp.NE, pid))
    rules.load()


# True once this process has confined itself (tests' audit hooks look at it).
CONFINED = False


def confine(max_bytes: int, max_cpu_seconds: int, max_file_bytes: int = 0) -> list[str]:
    """Apply every confinement this platform offers; return the names of the active layers.

    `max_file_bytes` bounds what the process may write into a file it already holds open (the
    sandbox's workers hold none; the reply reader its scratch files).
    """
    global CONFINED
    CONFINED = True
    set_resource_limits(max_bytes, max_cpu_seconds, max_file_bytes)
    layers = ["rlimits"]
    if platform.system() != "Linux":
        return layers
    libc = _libc()
    _no_new_privs(libc)
    abi = landlock_abi()
    if abi:
        _apply_landlock(libc, abi)
        layers.append(f"landlock-abi{abi}")
    if _SECCOMP is not None:
        _apply_seccomp(_SECCOMP)
        layers.append("seccomp")
    return layers


__all__ = ["confine", "landlock_abi", "set_resource_limits"]
