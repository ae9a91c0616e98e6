"""Jinja template analysis: artifacts from the syntax tree, constant folding, never rendering."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gguf_recipes as R

from modelshield.checks.gguf import judge
from modelshield.findings import Severity
from modelshield.formats import jinja_template as jt


def _names(src: str, kind: jt.Kind) -> list[str]:
    return [a.name for a in jt.analyse(src).of(kind)]


def _worst(src: str) -> Severity | None:
    v = judge(jt.analyse(src))
    return v[0][0] if v else None


def test_artifacts() -> None:
    a = jt.analyse("{{ x.y['z'] | attr('w') }}{{ f(1) }}{{ o.m() }}{% include 'other' %}")
    assert [x.name for x in a.of(jt.Kind.ATTR)] == ["y", "m"]
    assert [x.name for x in a.of(jt.Kind.ITEM)] == ["z"]
    assert [(x.name, x.via) for x in a.of(jt.Kind.FILTER_ARG)] == [("w", "attr")]
    assert {(x.name, x.via) for x in a.of(jt.Kind.CALL)} == {("f", "function"), ("m", "method")}
    assert [(x.name, x.via) for x in a.of(jt.Kind.LOAD)] == [("other", "include")]
    assert "attr" in a.filters


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("'_' * 2 ~ 'class' ~ '_' * 2", "__class__"),
        ("2 * '_' + 'class' + '__'", "__class__"),
        ("'%c%c' | format(95, 95) ~ 'x'", "__x"),
        ("'%s%s' % ('_', '_')", "__"),
        ("['__', 'class', '__'] | join", "__class__"),
        ("'-'.join(['a', 'b'])", "a-b"),
        ("'\\x5f\\x5fclass\\x5f\\x5f'", "__class__"),
        ("'__CLASS__' | lower", "__class__"),
        ("'__ssalc__' | reverse", "__class__"),
        ("'x__class__x'[1:-1]", "__class__"),
        ("'__cla-ss__' | replace('-', '')", "__class__"),
    ],
)
def test_folding(expr: str, value: str) -> None:
    assert value in _names(f"{{{{ o[{expr}] }}}}", jt.Kind.ITEM)


def test_folding_through_variables_and_loops() -> None:
    src = (
        "{% set a = '__cla' %}{% set b = a ~ 'ss__' %}"
        "{% for k in ['__mro__'] %}{{ o[b] }}{{ o[k] }}{% endfor %}"
    )
    assert set(_names(src, jt.Kind.ITEM)) == {"__class__", "__mro__"}


def test_folding_is_bounded() -> None:
    # A huge repetition is not materialised; self-reference does not loop.
    src = "{% set a = a ~ 'x' %}{{ o['x' * 100000000] }}{{ o[a] }}"
    assert _names(src, jt.Kind.ITEM) == []


@pytest.mark.parametrize("name", sorted(R.BENIGN))
def test_benign_templates_judged_clean(name: str) -> None:
    assert judge(jt.analyse(R.BENIGN[name])) == []


@pytest.mark.parametrize("name", sorted(R.payloads(Path("/x"))))
def test_payloads_judged_critical(name: str) -> None:
    assert _worst(R.payloads(Path("/x"))[name]) is Severity.CRITICAL


@pytest.mark.parametrize(
    ("src", "sev"),
    [
        ("{{ self._TemplateReference__context }}", Severity.CRITICAL),
        ("{{ '{0.__class__}'.format(x) }}", Severity.CRITICAL),
        ("{% set f = '{0.__init__.__globals__}' %}{{ f.format(x) }}", Severity.CRITICAL),
        ("{{ x.mro() }}", Severity.CRITICAL),
        ("{{ os.listdir('/') }}", Severity.CRITICAL),
        ("{{ x|map(attribute='__class__')|list }}", Severity.CRITICAL),
        ("{{ x|selectattr('__class__.__name__') }}", Severity.CRITICAL),
        ("{{ x.f_globals }}", Severity.CRITICAL),
        ("{{ x._private }}", Severity.HIGH),
        ("{{ x|attr(name) }}", Severity.HIGH),
        ("{% import 'macros' as m %}", Severity.HIGH),
        ("{{ '__subclasses__' }}", Severity.HIGH),
        ("{{ message['_id'] }}{{ x|selectattr('role', 'equalto', 'user')|list }}", None),
        ("{{ 'a__b' }}{{ x['__'] }}{{ '{}'.format(x) }}", None),
    ],
)
def test_signals(src: str, sev: Severity | None) -> None:
    assert _worst(src) is sev


def test_unparseable() -> None:
    with pytest.raises(jt.TemplateError) as e:
        jt.analyse("{% if x %}")
    assert e.value.lineno == 1
    with pytest.raises(jt.TemplateError):
        jt.analyse("{{ " + "(" * 100_000 + "x" + ")" * 100_000 + " }}")
    with pytest.raises(jt.TemplateError, match="limit"):
        jt.analyse("x" * (jt.MAX_SOURCE + 1))


def test_extensions_parse() -> None:
    src = (
        "{% for x in y %}{% if x %}{% break %}{% endif %}{% continue %}{% endfor %}"
        "{% do l.append(1) %}"
    )
    jt.analyse(src)
    jt.analyse(R.HF_GENERATION)
