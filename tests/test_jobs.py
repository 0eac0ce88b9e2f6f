"""Input lines: the three formats, ids, pass-through metadata and bad lines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiproc.jobs import BadLine, Job, JobReader, parse_line, read_jobs
from apiproc.providers.anthropic import _messages_refusal, validate_messages


def lines(*objects: object) -> list[bytes]:
    return [(o if isinstance(o, str) else json.dumps(o)).encode() + b"\n" for o in objects]


BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def test_bare_line_gets_an_id_from_its_line_number() -> None:
    (job,) = read_jobs(lines("", BODY))
    assert isinstance(job, Job)
    assert job.custom_id == "line-2"
    assert job.params == BODY


def test_bare_metadata_is_passed_through_and_only_user_id_is_sent() -> None:
    (job,) = read_jobs(lines({**BODY, "metadata": {"row_id": 7, "user_id": "u-1"}}))
    assert job.metadata == {"row_id": 7, "user_id": "u-1"}
    assert job.params["metadata"] == {"user_id": "u-1"}


def test_bare_metadata_without_user_id_is_not_sent() -> None:
    (job,) = read_jobs(lines({**BODY, "metadata": {"row_id": 7}}))
    assert "metadata" not in job.params


def test_batch_line_sends_params_as_is_and_passes_metadata() -> None:
    params = {**BODY, "metadata": {"user_id": "u"}}
    (job,) = read_jobs(lines({"custom_id": "a-1", "params": params, "metadata": {"k": 1}}))
    assert job.custom_id == "a-1"
    assert job.params == params
    assert job.metadata == {"k": 1}


def test_openai_batch_line_sends_its_body() -> None:
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/messages", "body": BODY}
    (job,) = read_jobs(lines(line))
    assert (job.custom_id, job.params) == ("r1", BODY)


def test_bad_lines_name_their_line_and_reason() -> None:
    items = list(
        read_jobs(
            lines(
                "{not json",
                [1, 2],
                {"messages": BODY["messages"], "max_tokens": 5},
                {"model": "m", "messages": BODY["messages"]},
                {"model": "m", "max_tokens": "5", "messages": BODY["messages"]},
                {"model": "m", "max_tokens": 5, "messages": []},
                {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
                {"custom_id": "c", "params": "nope"},
            ),
            check=validate_messages,
        )
    )
    assert all(isinstance(item, BadLine) for item in items)
    reasons = [item.message for item in items]
    assert reasons[0].startswith("line 1: not valid JSON")
    assert reasons[1] == "line 2: not a JSON object"
    assert reasons[2] == "line 3: model: Field required"
    assert reasons[3] == "line 4: max_tokens: Field required"
    assert "max_tokens" in reasons[4]
    assert "messages" in reasons[5]
    assert "messages.0" in reasons[6]
    assert reasons[7] == "line 8: params must be a JSON object"


def test_a_duplicate_id_is_a_bad_line_and_keeps_the_first() -> None:
    first, second = read_jobs(
        lines({"custom_id": "x", "params": BODY}, {"custom_id": "x", "params": BODY})
    )
    assert isinstance(first, Job) and first.custom_id == "x"
    assert isinstance(second, BadLine) and "duplicate custom_id 'x'" in second.reason
    assert second.custom_id == "line-2"


def test_reading_is_lazy() -> None:
    def endless():
        n = 0
        while True:
            n += 1
            yield json.dumps({**BODY, "custom_id": f"id-{n}"}).encode()

    reader = read_jobs(endless())
    assert [next(reader).custom_id for _ in range(3)] == ["id-1", "id-2", "id-3"]


def test_a_given_id_that_names_an_earlier_unnamed_line_is_a_duplicate() -> None:
    first, second, third = read_jobs(
        lines(
            BODY, {"custom_id": "line-1", "params": BODY}, {"custom_id": "line-9", "params": BODY}
        )
    )
    assert isinstance(first, Job) and first.custom_id == "line-1"
    assert isinstance(second, BadLine) and "duplicate custom_id 'line-1'" in second.reason
    assert isinstance(third, Job) and third.custom_id == "line-9"


def test_an_unnamed_line_whose_id_was_given_earlier_is_a_duplicate() -> None:
    first, second = read_jobs(lines({"custom_id": "line-2", "params": BODY}, BODY))
    assert isinstance(first, Job)
    assert isinstance(second, BadLine) and "duplicate custom_id 'line-2'" in second.reason


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json_line"),
        (b"[1]", "invalid_json_line"),
        (
            b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}',
            "missing_required_parameter",
        ),
        (b'{"model": "m", "max_tokens": -1, "messages": []}', "invalid_request"),
        (b'{"custom_id": "' + b"x" * 65 + b'", "params": {}}', "invalid_custom_id"),
    ],
)
def test_a_bad_line_carries_a_reason_code(raw: bytes, code: str) -> None:
    item = parse_line(raw, 1, validate_messages)
    assert isinstance(item, BadLine) and item.code == code


def test_a_duplicate_id_carries_the_duplicate_code() -> None:
    reader = JobReader()
    params = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "a"}]}
    line = json.dumps({"custom_id": "x", "params": params}).encode()
    reader.feed(line)
    second = reader.feed(line)
    assert isinstance(second, BadLine) and second.code == "duplicate_custom_id"


ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=2))
MESSAGES = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(["user", "assistant", "system", 1]),
                "content": st.one_of(ODD_VALUES, st.lists(st.just({"type": "text"}))),
            },
        ),
        ODD_VALUES,
    ),
    max_size=3,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "max_tokens": st.one_of(ODD_VALUES, st.floats(allow_nan=False)),
            "messages": st.one_of(MESSAGES, ODD_VALUES),
        },
    )
)
def test_the_quick_look_at_a_messages_request_agrees_with_the_explained_check(
    params: dict[str, object],
) -> None:
    assert validate_messages(params) == _messages_refusal(params)
