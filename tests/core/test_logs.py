"""JSON log lines: the fields a log collector indexes, the ids of what a line belongs to, no secret."""

from __future__ import annotations

import json
import logging

import pytest

from citadel import logs


def record(message: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("citadel.test", logging.WARNING, __file__, 1, message, args, (type(exc), exc, None) if exc else None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_json_line_has_time_level_logger_message_and_the_request_id() -> None:
    token = logs.REQUEST_ID.set("req-42")
    try:
        line = json.loads(logs.JsonFormatter().format(record("indexed %d documents", 3)))
    finally:
        logs.REQUEST_ID.reset(token)
    assert line["level"] == "WARNING" and line["logger"] == "citadel.test" and line["message"] == "indexed 3 documents"
    assert line["request_id"] == "req-42" and line["time"].endswith("+00:00")


def test_prefects_run_ids_on_the_record_are_kept() -> None:
    line = json.loads(logs.JsonFormatter().format(record("step done", flow_run_id="f-1", task_run_id="t-1")))
    assert (line["flow_run_id"], line["task_run_id"]) == ("f-1", "t-1") and "request_id" not in line


@pytest.mark.parametrize(("text", "secret"), [
    ("key ctd_abc123_S3cr3tS3cr3tS3cr3t refused", "S3cr3tS3cr3tS3cr3t"),
    ("sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("cannot open postgresql://citadel:hunter2@db:5432/citadel", "hunter2"),
    ("settings api_key=abcdef123456 password: 'pw-9876'", "abcdef123456"),
    ("settings api_key=abcdef123456 password: 'pw-9876'", "pw-9876"),
])
def test_secrets_are_masked_in_every_format(text: str, secret: str) -> None:
    json_line = logs.JsonFormatter().format(record("%s", text))
    filtered = record("%s", text)
    logs.RedactingFilter().filter(filtered)
    assert secret not in json_line and secret not in filtered.getMessage()
    assert "***" in json.loads(json_line)["message"]
    assert "ctd_abc123_" in logs.redact("ctd_abc123_S3cr3tS3cr3tS3cr3t")  # the key's public id stays, to find it


def test_an_error_is_a_field_not_a_second_line() -> None:
    try:
        raise ValueError("bad input at postgresql://u:topsecret@h/db")
    except ValueError as exc:
        text = logs.JsonFormatter().format(record("failed", exc=exc))
    line = json.loads(text)
    assert "\n" not in text and line["error"].startswith("ValueError: bad input") and "topsecret" not in text


def test_configure_sends_json_lines_to_stderr_once(capsys: pytest.CaptureFixture[str]) -> None:
    name = "citadel.test_configure"
    logs.configure("json", "INFO", (name,))
    logs.configure("json", "INFO", (name,))
    logging.getLogger(name).info("hello %s", "world")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "hello world"
