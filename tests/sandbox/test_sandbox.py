"""Every malicious family loaded in the real sandbox: recorded, blocked, host untouched."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import sandbox_samples as S
from sandbox_samples import needs_sandbox

from modelshield.findings import Severity
from modelshield.sandbox import Behaviour, Limits, sandbox_file
from modelshield.sandbox import rules as R

pytestmark = needs_sandbox

FAST = Limits(timeout_s=20, cpu_s=20)


def rule_ids(b: Behaviour) -> set[str]:
    return {f.rule_id for f in b.findings}


def kernel(b: Behaviour, kind: str) -> list[str]:
    return [e.detail for e in b.events if e.source == "kernel" and e.kind == kind]


def audit(b: Behaviour, name: str) -> list[str]:
    return [e.detail for e in b.events if e.source == "audit" and e.name == name]


def assert_malicious(b: Behaviour) -> None:
    assert b.verdict() == "malicious", (b.findings, b.problems, b.stderr_tail)
    assert any(f.severity >= Severity.HIGH for f in b.findings)


def load_pickle(tmp_path: Path, payload: object, limits: Limits = FAST) -> Behaviour:
    return sandbox_file(str(S.write(tmp_path / "model.pkl", payload)), "auto", limits)


# --- process creation ---------------------------------------------------------------------


def test_os_system_recorded_blocked_and_host_untouched(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-system"
    b = load_pickle(tmp_path, S.system(f"touch {marker}"))
    assert_malicious(b)
    assert not marker.exists()
    assert {R.PROCESS, R.DANGEROUS_GLOBAL} <= rule_ids(b)
    assert audit(b, "os.system") == [repr(f"touch {marker}")]
    procs = [e for e in b.events if e.source == "kernel" and e.kind == "process"]
    assert procs and all(e.blocked for e in procs)
    assert "posix.system" in b.globals


def test_subprocess_popen_blocked(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-popen"
    b = load_pickle(tmp_path, S.popen(["/usr/bin/touch", str(marker)]))
    assert_malicious(b)
    assert not marker.exists()
    assert audit(b, "subprocess.Popen")
    assert kernel(b, "process")
    assert b.load_error and "PermissionError" in b.load_error


def test_exec_payload(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-exec"
    b = load_pickle(tmp_path, S.exec_code(f"import os\nos.system('touch {marker}')"))
    assert_malicious(b)
    assert not marker.exists()
    assert "builtins.exec" in b.globals
    assert R.PROCESS in rule_ids(b)
    assert R.DYNAMIC_CODE in rule_ids(b)  # exec of '<string>' called by the unpickler


def test_posixsubprocess_fork_exec(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-forkexec"
    b = load_pickle(tmp_path, S.fork_exec(f"touch {marker}"))
    assert_malicious(b)
    assert not marker.exists()
    assert kernel(b, "process"), b.events
    assert "_posixsubprocess.fork_exec" in b.globals


def test_ctypes_libc_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-ctypes"
    b = load_pickle(tmp_path, S.ctypes_system(f"touch {marker}"))
    assert_malicious(b)
    assert not marker.exists()
    assert R.NATIVE_CODE in rule_ids(b)
    assert kernel(b, "process")  # libc's system() forks: seen by strace, not by Python


# --- network and file system --------------------------------------------------------------


def test_socket_connect_to_host_loopback_never_arrives(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        b = load_pickle(tmp_path, S.connect(port))
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert_malicious(b)
    connects = [e for e in b.events if e.source == "kernel" and e.name == "connect"]
    assert connects and all(e.blocked for e in connects)
    assert f"htons({port})" in connects[0].detail
    assert audit(b, "socket.connect")


def test_file_write_to_host_path(tmp_path: Path) -> None:
    marker = tmp_path / "written-by-model"
    b = load_pickle(tmp_path, S.open_write(str(marker)))
    assert_malicious(b)
    assert not marker.exists()
    assert R.FILE_CHANGE in rule_ids(b)
    assert any(str(marker) in d for d in kernel(b, "file"))


def test_file_write_into_read_only_view(tmp_path: Path) -> None:
    target = Path(sys.executable).parent / "modelshield-sandbox-marker"
    try:
        b = load_pickle(tmp_path, S.open_write(str(target)))
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)
    assert_malicious(b)
    writes = [e for e in b.events if e.source == "kernel" and e.kind == "file"]
    assert writes and writes[0].blocked and "EROFS" in str(writes[0].result)


def test_file_delete_of_host_files(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    model = tmp_path / "model.pkl"
    # delete a host file (invisible in the sandbox) and the model itself (read-only bind)
    S.write(model, [S.remove(str(victim)), S.remove(str(model))])
    b = sandbox_file(str(model), "pickle", FAST)
    assert victim.read_text() == "keep me"
    assert model.exists()
    assert_malicious(b)
    deletes = [e for e in b.events if e.source == "kernel" and e.name.startswith("unlink")]
    assert deletes and all(e.blocked for e in deletes)
    assert audit(b, "os.remove")


# --- frameworks ---------------------------------------------------------------------------


def test_joblib_malicious_and_benign(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    marker = tmp_path / "pwned-joblib"
    bad = tmp_path / "bad.joblib"
    joblib.dump({"w": np.zeros(3), "p": S.system(f"touch {marker}")}, bad)
    good = tmp_path / "good.joblib"
    x = np.arange(40, dtype=float).reshape(20, 2)
    pipe = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())])
    joblib.dump(pipe.fit(x, (x[:, 0] > 20).astype(int)), good)
    b = sandbox_file(str(bad), "auto", FAST)
    assert b.loader == "joblib"
    assert_malicious(b)
    assert not marker.exists()
    ok = sandbox_file(str(good), "auto", FAST)
    assert ok.verdict() == "clean", (ok.findings, ok.problems)
    assert ok.findings == []
    assert ok.loaded_type == "sklearn.pipeline.Pipeline"


def test_torch_weights_only_false(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned-torch"
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(2), "p": S.system(f"touch {marker}")}, bad)
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), good)
    b = sandbox_file(str(bad), "auto", FAST)
    assert b.loader == "torch"
    assert_malicious(b)
    assert not marker.exists()
    ok = sandbox_file(str(good), "auto", FAST)
    assert ok.verdict() == "clean", (ok.findings, ok.problems)
    assert ok.findings == []


def test_keras_lambda_safe_mode_false(tmp_path: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    marker = tmp_path / "pwned-keras"
    cmd = f"touch {marker}"
    bad = tmp_path / "bad.keras"
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Lambda(lambda x: (__import__("os").system(cmd), x)[1]),
        ]
    )
    model.save(bad)
    marker.unlink(missing_ok=True)  # building the model above ran the lambda on the host
    good = tmp_path / "good.keras"
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(good)
    b = sandbox_file(str(bad), "auto", FAST)
    assert b.loader == "keras"
    assert_malicious(b)
    assert not marker.exists()
    assert audit(b, "os.system")
    assert R.DYNAMIC_CODE in rule_ids(b)  # marshal.loads of the lambda's bytecode
    ok = sandbox_file(str(good), "auto", FAST)
    assert ok.verdict() == "clean", (ok.findings, ok.problems)
    assert ok.findings == []


def test_benign_pickle_and_numpy(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    data = tmp_path / "data.pkl"
    S.write(data, {"weights": [1.0, 2.0], "name": "ok", "shape": (2, 3)})
    arr = tmp_path / "arr.npy"
    np.save(arr, np.arange(12, dtype=np.float32))
    for path in (data, arr):
        b = sandbox_file(str(path), "auto", FAST)
        assert b.verdict() == "clean", (b.findings, b.problems)
        assert b.findings == []
        assert b.completed
    bad = tmp_path / "obj.npy"
    np.save(bad, np.array([S.system("true")], dtype=object), allow_pickle=True)
    assert_malicious(sandbox_file(str(bad), "auto", FAST))


# --- tampering and resource exhaustion ----------------------------------------------------


def test_closing_the_report_channel(tmp_path: Path) -> None:
    b = load_pickle(tmp_path, S.exec_code("import os\nos.closerange(3, 1024)"))
    assert b.verdict() != "clean"
    assert R.TAMPERING in rule_ids(b)
    assert any(e.kind == "tamper" and e.source == "kernel" for e in b.events)


def test_redirecting_the_report_channel(tmp_path: Path) -> None:
    code = (
        "import os\nnull = os.open('/dev/null', os.O_WRONLY)\n"
        "for fd in range(3, 64):\n    if fd != null:\n        os.dup2(null, fd)\n"
    )
    b = load_pickle(tmp_path, S.exec_code(code))
    assert b.verdict() != "clean"
    tamper = [e for e in b.events if e.kind == "tamper"]
    assert tamper and tamper[0].name == "dup2"
    assert R.TAMPERING in rule_ids(b)


def test_silent_exit_without_heartbeat(tmp_path: Path) -> None:
    b = load_pickle(tmp_path, S.Reduce(os._exit, 0))
    assert b.verdict() != "clean"
    assert R.TAMPERING in rule_ids(b)
    assert not b.completed


def test_fork_bomb_contained(tmp_path: Path) -> None:
    t = time.monotonic()
    b = load_pickle(tmp_path, S.exec_code("import os\nwhile True:\n    os.fork()"))
    assert time.monotonic() - t < 15
    assert_malicious(b)
    forks = kernel(b, "process")
    assert forks and len(forks) < 5  # the first fork fails: no bomb


def test_memory_bomb_contained(tmp_path: Path) -> None:
    limits = Limits(timeout_s=20, cpu_s=20, memory_bytes=256 * 1024**2)
    code = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))"
    b = load_pickle(tmp_path, S.exec_code(code), limits)
    assert not b.completed
    assert R.RESOURCE_LIMIT in rule_ids(b)
    assert any("memory" in p for p in b.problems)


def test_infinite_loop_hits_cpu_limit(tmp_path: Path) -> None:
    t = time.monotonic()
    b = load_pickle(tmp_path, S.exec_code("while True:\n    pass"), Limits(timeout_s=20, cpu_s=1))
    assert time.monotonic() - t < 15
    assert not b.completed
    assert R.RESOURCE_LIMIT in rule_ids(b)
    assert b.exit["signal"] in ("SIGXCPU", "SIGKILL"), b.exit


def test_sleep_past_the_timeout(tmp_path: Path) -> None:
    t = time.monotonic()
    b = load_pickle(tmp_path, S.Reduce(time.sleep, 60), Limits(timeout_s=1.5, cpu_s=10))
    assert time.monotonic() - t < 10
    assert b.exit["timed_out"]
    assert not b.completed
    assert R.RESOURCE_LIMIT in rule_ids(b)
    assert b.verdict() == "inconclusive"


def test_behaviour_report_json(tmp_path: Path) -> None:
    from modelshield.sandbox import behaviour_json, to_scan_result

    b = load_pickle(tmp_path, S.system("id"))
    doc = json.loads(behaviour_json([b]))
    res = doc["results"][0]
    assert doc["schema"] == "modelshield-sandbox-behaviour/1"
    assert res["verdict"] == "malicious"
    assert res["blocked"] and all(e["blocked"] for e in res["blocked"])
    assert any(e["name"] == "os.system" and e["args"] == ["id"] for e in res["events"])
    result = to_scan_result([b])
    assert result.coverage[0].format == "sandbox:pickle"
    assert not result.is_clean()
