"""Rules of the dynamic-analysis family ``MS7xx``: what a model did when loaded in the sandbox.

Kernel-level observations (strace, outside the sandbox) decide; the audit hook inside the child
only adds meaning (the command string, the resolved global). Each rule's ``description`` is its
documentation.
"""

from __future__ import annotations

from modelshield.findings import Confidence, Severity
from modelshield.rules.rule import Rule

PROCESS = "MS700"
NETWORK = "MS701"
FILE_CHANGE = "MS702"
NATIVE_CODE = "MS703"
DYNAMIC_CODE = "MS704"
DANGEROUS_GLOBAL = "MS705"
ESCAPE = "MS706"
TAMPERING = "MS707"
LOAD_INCOMPLETE = "MS708"
RESOURCE_LIMIT = "MS709"

RULES: tuple[Rule, ...] = (
    Rule(
        PROCESS,
        "sandbox-process-start",
        Severity.CRITICAL,
        Confidence.HIGH,
        78,
        "Loading the model tried to start a program or create a process",
        "While the real loader ran in the sandbox, the load called execve/execveat, fork, vfork "
        "or clone without CLONE_THREAD (seen by strace from outside the sandbox), or an "
        "os.system / subprocess / os.exec / posix_spawn audit event fired. The sandbox made the "
        "attempt fail (seccomp and strace return EPERM); outside it, this is code execution.",
    ),
    Rule(
        NETWORK,
        "sandbox-network",
        Severity.CRITICAL,
        Confidence.HIGH,
        506,
        "Loading the model tried to use the network",
        "The load created a network socket, connected, bound, listened or sent data (or "
        "resolved a host name). The sandbox has no network (a private, empty network "
        "namespace), so the attempt could not reach anything; a model load never needs it.",
    ),
    Rule(
        FILE_CHANGE,
        "sandbox-file-change",
        Severity.HIGH,
        Confidence.HIGH,
        506,
        "Loading the model tried to create, change or delete files",
        "The load opened a file for writing, or created, deleted, renamed, linked or changed "
        "the permissions of a file or directory. Outside the private scratch space the sandbox "
        "view is read-only and the attempt failed; inside it (/tmp) the change was thrown away "
        "with the sandbox. Loading a model does not need to write files.",
    ),
    Rule(
        NATIVE_CODE,
        "sandbox-native-code",
        Severity.HIGH,
        Confidence.MEDIUM,
        111,
        "Loading the model loaded or called native code through ctypes",
        "A ctypes library was opened or a foreign function called during the load (audit "
        "events ctypes.dlopen / ctypes.call_function). Native calls bypass Python-level "
        "controls; their system calls are still recorded by strace.",
    ),
    Rule(
        DYNAMIC_CODE,
        "sandbox-dynamic-code",
        Severity.MEDIUM,
        Confidence.LOW,
        95,
        "Loading the model compiled or executed code that is not from an installed module",
        "exec/eval/compile ran source text or a code object that does not come from a file "
        "(e.g. '<string>'), or marshal.loads rebuilt a code object (Keras Lambda layers do "
        "this by design with safe_mode=False). Not decisive on its own; look at what it did.",
    ),
    Rule(
        DANGEROUS_GLOBAL,
        "sandbox-dangerous-global",
        Severity.CRITICAL,
        Confidence.HIGH,
        502,
        "The loader resolved a known-dangerous global",
        "The unpickler looked up a callable that modelshield's policy lists as dangerous "
        "(audit event pickle.find_class), e.g. posix.system or builtins.exec. Reported even "
        "when the sandbox made the call itself fail.",
    ),
    Rule(
        ESCAPE,
        "sandbox-escape-attempt",
        Severity.CRITICAL,
        Confidence.HIGH,
        250,
        "Loading the model tried to escape or weaken the sandbox",
        "The load called ptrace, mount, unshare, setns, chroot, pivot_root, bpf, io_uring, "
        "kernel-module, kexec, keyring, perf_event_open, userfaultfd, process_vm_writev or "
        "seccomp. All of them are denied in the sandbox; none is needed to load a model.",
    ),
    Rule(
        TAMPERING,
        "sandbox-tampering",
        Severity.HIGH,
        Confidence.HIGH,
        778,
        "The model's load interfered with the sandbox's observation",
        "After the load started, the report channel was closed or replaced (close/dup2/dup3 "
        "on its descriptor, seen by strace), garbage was written to it, or the child stopped "
        "without its final heartbeat while exiting normally. The kernel-level record is still "
        "complete; the Python-level details may not be.",
    ),
    Rule(
        LOAD_INCOMPLETE,
        "sandbox-load-incomplete",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        None,
        "The load did not complete in the sandbox",
        "The loader raised an error or the child crashed, so only part of what loading this "
        "file does was observed. The result is inconclusive, never clean.",
    ),
    Rule(
        RESOURCE_LIMIT,
        "sandbox-resource-limit",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        400,
        "The load hit a sandbox limit (time, CPU, memory, file size)",
        "The load was stopped by the wall-clock or CPU limit, ran out of its address-space or "
        "file-size allowance, or could not start a thread. Hangs, infinite loops and memory "
        "bombs end here; the result is inconclusive, never clean. Raise the limits "
        "(--timeout, --memory) for a legitimately large model.",
    ),
)
