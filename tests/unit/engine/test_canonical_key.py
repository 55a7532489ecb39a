"""The idempotency key's canonical JSON is built by hand for speed; it must stay the encoder's
byte for byte, or records already in a ledger would get new keys and be sent again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import _CANONICAL, _canonical

_ANY = st.one_of(
    st.none(), st.text(), st.floats(), st.integers(), st.booleans(), st.just('\ud800\x00"\\')
)


@settings(max_examples=2000)
@given(st.text(), st.text(), _ANY, _ANY, _ANY)
def test_canonical_is_the_encoders(a: str, s: str, m: object, score: object, t: object) -> None:
    values = [a, s, m, score, t]
    assert _canonical(a, s, m, score, t) == _CANONICAL(values)  # type: ignore[arg-type]
