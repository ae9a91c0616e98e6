"""Rules of the format checks, kept apart from the checks themselves: the catalogue (reports,
SARIF, ``modelshield rules``) needs their descriptions, not the format readers behind them.

Each ``modelshield.checks.<name>`` module exposes its table as ``RULES``.
"""

from __future__ import annotations

from modelshield.findings import Confidence, Severity
from modelshield.rules.rule import Rule

# gguf: modelshield.checks.gguf
GGUF: tuple[Rule, ...] = (
    Rule(
        "MS500",
        "gguf-template-injection",
        Severity.CRITICAL,
        Confidence.HIGH,
        1336,
        "GGUF chat template reaches Python internals (server-side template injection)",
        "A chat template stored in the GGUF metadata accesses Python internals (dunder "
        "attributes such as __globals__, __subclasses__ or __builtins__, name-mangled private "
        "attributes, frame or function internals, mro(), popen, os, eval). Loaders that render "
        "chat templates with an unsandboxed Jinja environment (llama-cpp-python < 0.2.72, "
        "CVE-2024-34359) execute arbitrary code when the model is loaded or first used. "
        "Benign chat templates only format messages. HIGH-severity findings of this rule are "
        "weaker signals (private attributes, attribute names computed at render time, template "
        "loads) that no benign chat template needs.",
    ),
    Rule(
        "MS501",
        "gguf-invalid",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "GGUF header or metadata breaks the format or a limit",
        "The GGUF header or its metadata key/value section is truncated, uses an unknown "
        "version or value type, repeats a key, or exceeds a parser limit. Metadata after the "
        "break (which may hold a chat template) was not analysed, so coverage is inconclusive.",
    ),
    Rule(
        "MS502",
        "gguf-template-unparseable",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        20,
        "GGUF chat template cannot be parsed",
        "A chat template in the GGUF metadata is not valid Jinja (or exceeds the size limit). "
        "A Jinja loader cannot render a template it cannot parse, so the template cannot run "
        "code there; but benign converters do not write such templates and other template "
        "engines may read it differently, so the template is reported and coverage is partial.",
    ),
)

# keras: modelshield.checks.keras
KERAS: tuple[Rule, ...] = (
    Rule(
        "MS300",
        "keras-lambda-code",
        Severity.CRITICAL,
        Confidence.HIGH,
        94,
        "Keras Lambda layer with serialized Python bytecode",
        "The model configuration carries marshalled Python bytecode (a Lambda layer's function, "
        "output_shape or mask, or a serialized __lambda__). Keras turns it back into a function "
        "with marshal.loads and runs it when the layer is built or called: with "
        "safe_mode=False, with keras.config.enable_unsafe_deserialization(), with tf.keras 2 "
        "(no safe mode), and with legacy HDF5 files on Keras < 3.11.3 (CVE-2025-9905, "
        "CVE-2024-3660). The bytecode is never unmarshalled by modelshield; the names it "
        "contains are shown as evidence.",
    ),
    Rule(
        "MS301",
        "keras-foreign-object",
        Severity.HIGH,
        Confidence.MEDIUM,
        502,
        "Keras config object resolved outside Keras' own modules",
        "An object of the configuration names a module outside keras, keras_hub, keras_nlp, "
        "keras_cv and tf_keras (or a Python builtin). Keras < 3.9 imported any such module and "
        "called the named attribute with attacker-chosen arguments even with safe_mode=True "
        "(CVE-2025-1550, GHSA-48g7-3x6r-xfhp); tf.keras 2 Lambda layers look functions up by "
        "module name. Severity is CRITICAL when the name is a known-dangerous callable. "
        "Objects that only the loading program's registered custom objects can resolve are "
        "reported at LOW.",
    ),
    Rule(
        "MS302",
        "keras-pickle-layer",
        Severity.HIGH,
        Confidence.HIGH,
        502,
        "Keras layer whose config carries a pickle",
        "A layer's configuration embeds a serialized Python object that its loader unpickles "
        "(TorchModuleWrapper stores a torch.save archive of the wrapped module and reads it "
        "back with torch.load(weights_only=False) when safe mode is off). The embedded payload "
        "is analysed by the pickle engine and its findings reported beside this one.",
    ),
    Rule(
        "MS303",
        "keras-unsafe-function",
        Severity.HIGH,
        Confidence.HIGH,
        829,
        "Keras API with side effects referenced by the config",
        "The configuration references a Keras function that is not a modeling operation: "
        "downloading files (keras.utils.get_file), loading or saving models and weights, "
        "turning safe mode off (keras.config.enable_unsafe_deserialization, "
        "global_state.set_global_attribute). Called through a Lambda layer these were the "
        "safe_mode bypasses CVE-2025-8747 (GHSA-c9rc-mg46-23w3, fixed in Keras 3.11.0) and "
        "CVE-2025-9906 (fixed in Keras 3.11.0); Keras now refuses its NON_MODELING_APIS list, "
        "older versions and tf.keras do not.",
    ),
    Rule(
        "MS304",
        "keras-config-unreadable",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "Keras model whose configuration could not be analysed",
        "The file is a Keras model (HDF5 with a model_config attribute, or a .keras archive) but "
        "its configuration could not be found or parsed, so the objects Keras would build from "
        "it were not checked. The file is reported as inconclusive, never as clean.",
    ),
    Rule(
        "MS305",
        "keras-external-path",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        73,
        "Keras layer reads a file or URL named by the config while loading",
        "A lookup layer's vocabulary (StringLookup, IntegerLookup, TextVectorization) or a "
        "TFSMLayer's filepath names a file or URL that is read while the model is rebuilt, "
        "with safe_mode=True: arbitrary local file read and SSRF (CVE-2025-12058, "
        "GHSA-qg93-c7p6-gg7f, fixed in Keras 3.12.0). TFSMLayer loads a whole TensorFlow "
        "SavedModel from that path (CVE-2026-1462, fixed in Keras 3.13.2) and is HIGH.",
    ),
)

# safetensors: modelshield.checks.safetensors
SAFETENSORS: tuple[Rule, ...] = (
    Rule(
        "MS510",
        "safetensors-invalid",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "safetensors header breaks the format",
        "The safetensors header is invalid: its length runs past the file or the 100 MB limit, "
        "it is not UTF-8 JSON or not an object, it repeats a key, names an unknown dtype, gives "
        "a shape that is not a list of non-negative integers, data_offsets that are not "
        "[BEGIN, END], a byte span that does not match shape x dtype size, offsets that overlap "
        "or leave gaps or do not cover the data area exactly, or a __metadata__ that is not a "
        "string-to-string map. The safetensors loader rejects such a file (it cannot run code), "
        "but a benign writer never produces one: it is damaged, or crafted to make different "
        "parsers disagree about its content.",
    ),
)

# tflite: modelshield.checks.tflite
TFLITE: tuple[Rule, ...] = (
    Rule(
        "MS410",
        "tflite-custom-op",
        Severity.INFO,
        Confidence.HIGH,
        None,
        "TFLite custom operators",
        "The model uses custom operators. The TFLite interpreter runs them only if the "
        "application registers a native implementation under the same name (or, for 'Flex' "
        "operators, links the TensorFlow Select-ops delegate, which runs TensorFlow kernels). "
        "Informational: know which native code the model expects.",
    ),
    Rule(
        "MS411",
        "tflite-invalid",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "Invalid TFLite container",
        "The flatbuffer fails validation: an offset, table, vector or string lies outside the "
        "file, the file identifier is missing, an operator refers to an operator code that does "
        "not exist, or a buffer's out-of-line data lies past the end. The model's coverage is "
        "inconclusive.",
    ),
)

# onnx: modelshield.checks.onnx
ONNX: tuple[Rule, ...] = (
    Rule(
        "MS400",
        "onnx-external-data-traversal",
        Severity.HIGH,
        Confidence.HIGH,
        22,
        "ONNX external data outside the model's directory",
        "A tensor's external_data 'location' is an absolute path, contains '..', or resolves "
        "(through symbolic links) outside the directory of the model file. Loaders join the "
        "location to the model's directory and read the file into the tensor, so the model "
        "reads arbitrary files of the machine that loads it (onnx before 1.13, 1.16 and 1.21: "
        "CVE-2022-25882, CVE-2024-27318 / GHSA-whh8-fjgc-qp73, CVE-2026-27489; hard links: "
        "GHSA-cmw6-hcpp-c6jp), and their values can leak through the model's outputs.",
    ),
    Rule(
        "MS401",
        "onnx-custom-domain",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        829,
        "ONNX operators from a non-standard domain",
        "Nodes use operators outside the standard ONNX domains ('', ai.onnx, ai.onnx.ml, "
        "ai.onnx.preview.training). A runtime executes them with a custom-operator library: "
        "native code that the model's author asks you to load. onnxruntime's own contrib "
        "operators (com.microsoft) are built into the runtime and reported as low.",
    ),
    Rule(
        "MS402",
        "onnx-invalid",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "Damaged or truncated ONNX model",
        "The protobuf message cannot be read to the end (truncated field, bad varint, graphs "
        "nested too deep). What was read is reported; the rest was not analysed, so the "
        "model's coverage is inconclusive.",
    ),
    Rule(
        "MS403",
        "onnx-external-data-unresolved",
        Severity.LOW,
        Confidence.HIGH,
        20,
        "ONNX external data that cannot be read as described",
        "A tensor's external data has no location, names a file that does not exist beside the "
        "model or is not a regular file, or has an offset or length that is not a number or "
        "lies beyond the end of the file. Loaders fail on it; it is also how probing for the "
        "size of other files looks.",
    ),
)

# tensorflow: modelshield.checks.tensorflow
TENSORFLOW: tuple[Rule, ...] = (
    Rule(
        "MS310",
        "tf-dangerous-op",
        Severity.HIGH,
        Confidence.HIGH,
        73,
        "TensorFlow graph op that reaches outside the graph",
        "The graph runs an op that calls back into Python (PyFunc, PyFuncStateless, "
        "EagerPyFunc: CRITICAL), writes or deletes files (WriteFile, Save, SaveV2 and "
        "MergeV2Checkpoints outside the standard saver, summary writers, dataset snapshots: "
        "HIGH), talks to the network or a database (RPC ops, DataServiceDataset, SqlDataset: "
        "HIGH), or reads and lists files (ReadFile, MatchingFiles, readers and file datasets, "
        "RestoreV2 outside the saver, ImmutableConst: MEDIUM). Serving or calling the model "
        "runs them with the user's privileges. The standard checkpoint ops of the saver graph "
        "are reported at INFO.",
    ),
    Rule(
        "MS311",
        "tf-op-inventory",
        Severity.INFO,
        Confidence.HIGH,
        None,
        "TensorFlow graph op inventory and custom ops",
        "Lists the ops of the graph. Namespaced ops (e.g. 'Addons>...') come from custom op "
        "libraries, native code that the loading program must load with tf.load_op_library.",
    ),
)

# source: modelshield.checks.source
SOURCE: tuple[Rule, ...] = (
    Rule(
        "MS600",
        "remote-code-reference",
        Severity.MEDIUM,
        Confidence.HIGH,
        829,
        "Configuration makes the loader import Python code (auto_map)",
        "A Hugging Face configuration (config.json, tokenizer_config.json, processor or "
        "preprocessor config) has an auto_map (or custom_pipelines) entry: with "
        "trust_remote_code=True the Auto* classes import the named module and run it in the "
        "loading process. MEDIUM when the module is in the scanned directory (its source is "
        "analysed by the MS602-MS606 rules); HIGH when it is not there (transformers downloads "
        "it from the hub at load time, unanalysed) or when the reference names another "
        "repository ('org/repo--module.Class'): code from elsewhere, possibly changed after "
        "this scan.",
    ),
    Rule(
        "MS601",
        "python-source-present",
        Severity.INFO,
        Confidence.HIGH,
        829,
        "Python source in a model repository",
        "A .py file ships with the model. Loading with trust_remote_code=True imports it when a "
        "configuration refers to it (MS600), running its module body and, later, its classes' "
        "methods. Its source is analysed statically; see the MS602-MS606 findings, if any.",
    ),
    Rule(
        "MS602",
        "source-process",
        Severity.HIGH,
        Confidence.HIGH,
        78,
        "Python source starts processes or changes the process environment",
        "The code calls os.system, os.popen, os.exec*/spawn*, subprocess, pty or similar, or sets "
        "environment variables that change how programs and libraries load (LD_PRELOAD, PATH, "
        "PYTHONPATH...). CRITICAL when it runs on import; HIGH inside functions (they run when "
        "the model is built or used); LOW only under `if __name__ == '__main__':`.",
    ),
    Rule(
        "MS603",
        "source-network",
        Severity.HIGH,
        Confidence.HIGH,
        913,
        "Python source opens network connections",
        "The code uses socket, urllib.request, http.client, requests, httpx, aiohttp, ftplib, "
        "smtplib or similar: model code has no need to talk to the network, and this is how data "
        "is exfiltrated or second stages are fetched. Downloads through huggingface_hub or "
        "torch.hub helpers are MEDIUM (common in real modeling code, but they still fetch "
        "content that this scan did not see).",
    ),
    Rule(
        "MS604",
        "source-filesystem",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        73,
        "Python source writes, deletes or reads sensitive files",
        "The code opens files for writing, deletes, moves or changes permissions of files, or "
        "extracts archives. MEDIUM inside functions; LOW in functions whose name says they save "
        "or export; HIGH on import, or when the path is sensitive (SSH keys, shell profiles, "
        "credentials, site-packages, /etc) - reading such a file is HIGH too. Plain reads (a "
        "vocabulary file) are not reported.",
    ),
    Rule(
        "MS605",
        "source-dynamic-code",
        Severity.HIGH,
        Confidence.HIGH,
        95,
        "Python source runs dynamically built code, native code or deserialises objects",
        "eval/exec/compile, __import__ or importlib.import_module with a computed name, loading "
        "modules from file paths, marshal/pickle deserialisation (torch.load with "
        "weights_only=False), code objects, ctypes/cffi native libraries, compiling C++/CUDA "
        "extensions, torch.hub.load (runs a GitHub repository's hubconf.py), or replacing "
        "builtins. Constant payloads (exec(base64.b64decode('...'))) are decoded and analysed "
        "in turn. Relative dynamic imports (transformers-style lazy modules) are LOW.",
    ),
    Rule(
        "MS606",
        "source-unparseable",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        20,
        "Python source could not be analysed",
        "The file could not be parsed by this Python (syntax error, newer syntax, nesting too "
        "deep, too large) or part of it was too deeply nested to analyse. A newer interpreter "
        "may still run it, so the file is reported inconclusive (or partial), never clean. "
        "HIGH when its text mentions process, network or dynamic-code functions.",
    ),
)
