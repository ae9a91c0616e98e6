"""Readable recipes for GGUF test files: real chat templates, CVE-2024-34359 payloads, writers.

Files are written with the ``gguf`` package's own ``GGUFWriter`` (what llama.cpp's converters
use), so the scanner is tested on the bytes real tools produce.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import jinja2
import numpy as np

# ---------------------------------------------------------------- benign templates (verbatim)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + "
    "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)
DEEPSEEK = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ 'Assistant:' }}{% endif %}"
)
QWEN25_TOOLS = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions.\\n\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n'
    '    {%- endfor %}\n    {{- "\\n</tools>" }}\n{%- endif %}\n'
    "{%- for message in messages %}\n"
    '    {%- if message.role == "assistant" and message.tool_calls %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}'
    "{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' "
    "+ '\\n' }}\n"
    "    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
LLAMA31_TOOLS_EXCERPT = (
    "{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}"
    "{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}"
    "{%- endif %}{%- if not date_string is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{%- set ns = namespace(found=false) %}"
    "{%- for message in messages %}{%- if message.role == 'system' %}"
    "{%- set ns.found = true %}{%- endif %}{%- endfor %}"
    "{%- for t in tools | selectattr('type', 'equalto', 'function') | map(attribute='function') %}"
    "{{- t | tojson(indent=4) }}{%- if loop.last %}{% break %}{% endif %}{%- endfor %}"
    "{%- for message in messages | rejectattr('role', 'equalto', 'system') %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- if message.tool_calls is defined and message.tool_calls | length > 0 %}"
    "{%- set tool_call = message.tool_calls[0].function %}"
    '{{- \'{"name": "\' + tool_call.name + \'", "parameters": \' }}'
    "{{- tool_call.arguments | tojson }}{%- for arg_name, arg_val in "
    "tool_call.arguments | items %}{{- arg_name + '=\"' + arg_val + '\"' }}{%- endfor %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
HF_GENERATION = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] }}{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)
"""Transformers' ``{% generation %}`` tag (assistant-token masks)."""

BENIGN: dict[str, str] = {
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "chatml": CHATML,
    "zephyr": ZEPHYR,
    "gemma": GEMMA,
    "phi3": PHI3,
    "deepseek": DEEPSEEK,
    "qwen2.5-tools": QWEN25_TOOLS,
    "llama3.1-tools": LLAMA31_TOOLS_EXCERPT,
    "hf-generation": HF_GENERATION,
}


# ---------------------------------------------------------------- malicious templates
def payloads(marker: Path) -> dict[str, str]:
    """CVE-2024-34359 style templates that create ``marker`` when rendered unsandboxed."""
    cmd = f"touch {marker}"
    return {
        # The published PoC (GHSA-56xg-wfcc-g829): walk to os through the template globals.
        "self-init-globals": (
            "{{ self.__init__.__globals__.__builtins__.__import__('os')"
            f".popen('{cmd}').read() }}}}"
        ),
        # The classic subclasses walk: object -> every class -> one whose __init__ globals
        # hold the os module (os._wrap_close).
        "subclasses": (
            "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
            "{% if c.__name__ == '_wrap_close' %}"
            f"{{{{ c.__init__.__globals__['popen']('{cmd}').read() }}}}"
            "{% endif %}{% endfor %}"
        ),
        "lipsum": f"{{{{ lipsum.__globals__['os'].popen('{cmd}').read() }}}}",
        "cycler": f"{{{{ cycler.__init__.__globals__.os.popen('{cmd}').read() }}}}",
        "joiner": f"{{{{ joiner.__init__.__globals__.os.popen('{cmd}').read() }}}}",
        "namespace": f"{{{{ namespace.__init__.__globals__.os.popen('{cmd}').read() }}}}",
        "attr-filter": (
            f"{{{{ (lipsum|attr('__globals__'))['os']|attr('popen')('{cmd}')|attr('read')() }}}}"
        ),
        "concatenated-dunders": (
            "{% set u = '_' * 2 %}"
            "{{ (lipsum|attr(u ~ 'glob' ~ 'als' ~ u)).os.popen"
            f"('{cmd}').read() }}}}"
        ),
        "hex-escapes": (
            f"{{{{ (lipsum|attr('\\x5f\\x5fglobals\\x5f\\x5f'))['os'].popen('{cmd}').read() }}}}"
        ),
        "percent-format": (
            "{% set u = '%c%c' | format(95, 95) %}"
            "{{ (lipsum|attr(u + 'globals' + u))['os']"
            f".popen('{cmd}').read() }}}}"
        ),
        "join-list": (
            f"{{{{ lipsum[['__', 'glo', 'bals', '__'] | join]['os'].popen('{cmd}').read() }}}}"
        ),
        "loop-variable": (
            "{% for k in ['__globals__'] %}"
            f"{{{{ lipsum[k]['os'].popen('{cmd}').read() }}}}"
            "{% endfor %}"
        ),
        "hidden-in-benign": (
            CHATML + "{% if add_generation_prompt %}"
            f"{{{{ cycler.__init__.__globals__.os.popen('{cmd}').read() }}}}"
            "{% endif %}"
        ),
    }


def render_unsandboxed(template: str) -> str:
    """Render the way vulnerable loaders did (llama-cpp-python < 0.2.72): a plain Environment.

    Used by tests only, to PROVE a payload executes; modelshield never renders.
    """
    env = jinja2.Environment(loader=jinja2.BaseLoader())  # noqa: S701 (the vulnerable loader)
    return env.from_string(template).render(
        messages=[{"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        bos_token="<s>",  # noqa: S106
        eos_token="</s>",  # noqa: S106
    )


# ---------------------------------------------------------------- writers
def write_gguf(
    path: Path,
    templates: dict[str, str] | None = None,
    *,
    tokens: int = 16,
    tensor: bool = True,
) -> Path:
    """A small real GGUF file: metadata, a vocabulary, chat templates, one tensor.

    ``templates`` maps ``""`` to ``tokenizer.chat_template`` and a name to the named template
    ``tokenizer.chat_template.<name>`` (listed in ``tokenizer.chat_templates``).
    """
    w = gguf.GGUFWriter(os.fspath(path), "llama")
    w.add_name("test")
    w.add_context_length(128)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}".encode() for i in range(tokens)])
    w.add_token_scores([0.0] * tokens)
    for name, tmpl in (templates or {}).items():
        if name:
            w.add_string(f"tokenizer.chat_template.{name}", tmpl)
        else:
            w.add_string("tokenizer.chat_template", tmpl)
    named = [n for n in (templates or {}) if n]
    if named:
        w.add_array("tokenizer.chat_templates", named)
    if tensor:
        w.add_tensor("tok_embd", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
