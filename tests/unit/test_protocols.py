"""The serial codecs: ccTalk frames and bill events, ESC/POS status, the terminal console."""

from __future__ import annotations

import pytest

from floorwatch.errors import CommandFailed, ProtocolError
from floorwatch.protocols import cctalk, console, escpos

# ccTalk frames


def test_simple_poll_to_bill_validator_has_known_bytes() -> None:
    """A simple poll from host 1 to address 40 is 40 0 1 254 with checksum 217."""
    assert cctalk.encode_frame(40, 1, cctalk.HEADER_SIMPLE_POLL) == bytes([40, 0, 1, 254, 217])


def test_ack_reply_decodes_to_empty_header_zero_frame() -> None:
    """The ACK 1 0 40 0 215 decodes as header 0 from 40 with no data."""
    frame = cctalk.decode_frame(bytes([1, 0, 40, 0, 215]))
    assert frame == cctalk.Frame(dest=1, src=40, header=0, data=b"")
    assert frame.is_ack


def test_frame_with_data_round_trips() -> None:
    """Encoding then decoding a frame with data gives it back, and its byte sum is 0."""
    raw = cctalk.encode_frame(1, 40, 0, b"\x05\x01\x00\x00\x06")
    assert sum(raw) % 256 == 0
    assert cctalk.decode_frame(raw) == cctalk.Frame(1, 40, 0, b"\x05\x01\x00\x00\x06")


def test_frame_with_bad_checksum_is_rejected() -> None:
    """A frame whose byte sum is not 0 raises ProtocolError naming the checksum."""
    with pytest.raises(ProtocolError, match="checksum"):
        cctalk.decode_frame(bytes([40, 0, 1, 254, 218]))


@pytest.mark.parametrize("length", [0, 3, 4])
def test_truncated_frame_is_rejected(length: int) -> None:
    """A frame cut short raises ProtocolError naming the truncation."""
    raw = cctalk.encode_frame(1, 40, 0, b"\x01")[:length]
    with pytest.raises(ProtocolError, match="truncated"):
        cctalk.decode_frame(raw)


def test_frame_with_trailing_bytes_is_rejected() -> None:
    """decode_frame takes exactly one frame; extra bytes are an error."""
    with pytest.raises(ProtocolError, match="extra"):
        cctalk.decode_frame(bytes([40, 0, 1, 254, 217, 0]))


def test_encode_refuses_values_that_are_not_bytes() -> None:
    """Addresses beyond 255 or too much data cannot be encoded."""
    with pytest.raises(ProtocolError, match="dest"):
        cctalk.encode_frame(256, 1, 254)
    with pytest.raises(ProtocolError, match="data bytes"):
        cctalk.encode_frame(40, 1, 254, bytes(253))


def test_split_frames_returns_whole_frames_and_the_rest() -> None:
    """A stream of two frames and a partial third splits into two frames and the partial."""
    a = cctalk.encode_frame(1, 40, 0)
    b = cctalk.encode_frame(1, 40, 0, b"abc")
    frames, rest = cctalk.split_frames(a + b + b"\x01\x04")
    assert [f.data for f in frames] == [b"", b"abc"]
    assert rest == b"\x01\x04"


def test_frame_reader_skips_an_exact_echo_of_the_request() -> None:
    """On a one-wire bus the request comes back first; the reader drops it."""
    request = cctalk.encode_frame(40, 1, cctalk.HEADER_SIMPLE_POLL)
    reader = cctalk.FrameReader()
    reader.expect_echo(request)
    assert reader.feed(request[:3]) == []
    frames = reader.feed(request[3:] + cctalk.encode_frame(1, 40, 0))
    assert frames == [cctalk.Frame(1, 40, 0)]


def test_frame_reader_without_echo_reads_the_reply_directly() -> None:
    """With no echo on the line, the armed reader still returns the reply."""
    reader = cctalk.FrameReader()
    reader.expect_echo(cctalk.encode_frame(40, 1, cctalk.HEADER_SIMPLE_POLL))
    reply = cctalk.encode_frame(1, 40, 0, b"\x07")
    assert reader.feed(reply[:2]) == []
    assert reader.feed(reply[2:]) == [cctalk.Frame(1, 40, 0, b"\x07")]
    assert reader.pending == b""


def test_frame_reader_raises_on_a_corrupted_reply() -> None:
    """A reply with a wrong checksum surfaces as ProtocolError from the reader."""
    reply = bytearray(cctalk.encode_frame(1, 40, 0))
    reply[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="checksum"):
        cctalk.FrameReader("hall-1-t01-bill").feed(bytes(reply))


# ccTalk bill events


def test_bill_events_round_trip_newest_first() -> None:
    """A buffer of a credit and a jam decodes to those events, newest first."""
    data = cctalk.encode_bill_events(2, [(0, 6), (3, 0)])
    buffer = cctalk.decode_bill_events(data)
    assert buffer.counter == 2
    jam, credit = buffer.new_events()
    assert (jam.kind, jam.is_jam, jam.description) == (
        "fatal",
        True,
        "bill jammed in transport (unsafe mode)",
    )
    assert (credit.kind, credit.bill_type) == ("credit", 3)
    assert buffer.latest == jam


def test_bill_event_kinds_follow_the_cctalk_table() -> None:
    """Escrow, reject, fraud and stacker-full codes map to the spec's event types."""
    assert cctalk.BillEvent(2, 1).kind == "escrow"
    assert cctalk.BillEvent(0, 2).kind == "reject"
    assert cctalk.BillEvent(0, 17).description == "opto fraud detected"
    assert cctalk.BillEvent(0, 17).kind == "fraud"
    assert cctalk.BillEvent(0, 14).description == "stacker full"
    assert cctalk.BillEvent(0, 99).kind == "unknown"


def test_new_events_count_from_the_previous_counter_across_wrap() -> None:
    """The counter wraps 255 -> 1, so 254 then 2 means three new events."""
    buffer = cctalk.decode_bill_events(cctalk.encode_bill_events(2, [(1, 0)] * 5))
    assert len(buffer.new_events(previous=254)) == 3
    assert buffer.new_events(previous=2) == ()


def test_events_beyond_the_five_slots_are_counted_as_lost() -> None:
    """Eight events since the last read: five readable, three lost."""
    buffer = cctalk.decode_bill_events(cctalk.encode_bill_events(10, [(1, 0)] * 5))
    assert len(buffer.new_events(previous=2)) == 5
    assert buffer.lost_events(previous=2) == 3


def test_reset_buffer_has_no_events() -> None:
    """Counter 0 (after reset) means the slots hold nothing, whatever their bytes."""
    buffer = cctalk.decode_bill_events(cctalk.encode_bill_events(0, [(0, 6)]))
    assert buffer.new_events() == ()
    assert buffer.latest is None


def test_bill_events_of_wrong_length_are_rejected() -> None:
    """A bill events reply must carry exactly 11 data bytes."""
    with pytest.raises(ProtocolError, match="11"):
        cctalk.decode_bill_events(b"\x01\x00\x06")


# ESC/POS status


def test_healthy_printer_answers_0x12_to_every_status_request() -> None:
    """A ready printer reports only the fixed bits, and decodes back as ready."""
    healthy = escpos.PrinterStatus()
    replies = {n: escpos.encode_status(n, healthy) for n in escpos.STATUS_KINDS}
    assert set(replies.values()) == {0x12}
    status = escpos.decode_printer_status(replies)
    assert status.ready
    assert status.problems() == []


def test_status_requests_are_dle_eot_n() -> None:
    """DLE EOT 4 is 0x10 0x04 0x04, and n outside 1..4 is refused."""
    assert escpos.status_request(4) == b"\x10\x04\x04"
    assert escpos.ALL_STATUS_REQUESTS == b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"
    with pytest.raises(ProtocolError, match=r"1\.\.4"):
        escpos.status_request(5)


def test_paper_sensor_byte_reports_paper_end_and_near_end() -> None:
    """0x7E to DLE EOT 4 means paper near end (bits 2-3) and paper end (bits 5-6)."""
    assert escpos.decode_status(4, 0x7E) == {"paper_near_end": True, "paper_end": True}
    assert escpos.decode_status(4, 0x1E) == {"paper_near_end": True, "paper_end": False}


def test_offline_cause_byte_reports_cover_open_and_error() -> None:
    """Bit 2 of DLE EOT 2 is cover open, bit 6 an error."""
    flags = escpos.decode_status(2, 0x12 | 0x04 | 0x40)
    assert flags["cover_open"]
    assert flags["error"]
    assert not flags["paper_end_stop"]


def test_paper_out_status_round_trips_through_four_bytes() -> None:
    """A printer out of paper encodes and decodes to paper end, stopped and offline."""
    out = escpos.PrinterStatus(
        online=False, paper_end=True, paper_near_end=True, paper_end_stop=True
    )
    replies = {n: escpos.encode_status(n, out) for n in escpos.STATUS_KINDS}
    assert replies == {1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x7E}
    decoded = escpos.decode_printer_status(replies)
    assert decoded == out
    assert not decoded.ready
    assert "paper end" in decoded.problems()


@pytest.mark.parametrize("byte", [0x13, 0x10, 0x02, 0x92, 0x81])
def test_status_byte_with_wrong_fixed_bits_is_garbled(byte: int) -> None:
    """Any byte breaking bits 0,1,4,7 is a garbled reply, not a status."""
    with pytest.raises(ProtocolError, match="fixed bits"):
        escpos.decode_status(1, byte)


def test_printer_status_needs_all_four_replies() -> None:
    """Combining replies without DLE EOT 3 names the missing request."""
    with pytest.raises(ProtocolError, match="DLE EOT 3"):
        escpos.decode_printer_status({1: 0x12, 2: 0x12, 4: 0x12})


# terminal console


def test_checksum_is_xor_of_the_characters() -> None:
    """The checksum of 'OK' is 0x4F ^ 0x4B = 0x04."""
    assert console.checksum("OK") == "04"
    assert console.encode_reply({}) == b"OK*04\r\n"


def test_reply_round_trips() -> None:
    """Fields encode to key=value pairs and parse back as strings."""
    line = console.encode_reply({"state": "playing", "heartbeat": 7, "flag": True})
    assert line.startswith(b"OK state=playing heartbeat=7 flag=1*")
    assert line.endswith(b"\r\n")
    assert console.parse_reply(line) == {"state": "playing", "heartbeat": "7", "flag": "1"}


def test_reply_with_bad_checksum_is_garbled() -> None:
    """One changed character makes the checksum fail with ProtocolError."""
    line = console.encode_reply({"state": "playing"}).replace(b"playing", b"plbying")
    with pytest.raises(ProtocolError, match="checksum"):
        console.parse_reply(line)


@pytest.mark.parametrize(
    "line",
    [b"OK state=playing\r\n", b"OK state=playing*4\r\n", b"OK state=pl\xffying*00\r\n"],
)
def test_reply_without_valid_checksum_field_is_rejected(line: bytes) -> None:
    """A missing, short or non-ASCII line raises ProtocolError."""
    with pytest.raises(ProtocolError):
        console.parse_reply(line)


def test_error_reply_raises_command_failed_with_reason() -> None:
    """An ERR reply is a valid line that reports a failure."""
    line = console.encode_error("unknown command 'FOO'")
    assert console.decode_reply(line) == console.Reply(ok=False, error="unknown command 'FOO'")
    with pytest.raises(CommandFailed, match="unknown command"):
        console.parse_reply(line)


def test_reply_neither_ok_nor_err_is_rejected() -> None:
    """A well-checksummed line that is neither OK nor ERR is a ProtocolError."""
    body = "HELLO there"
    with pytest.raises(ProtocolError, match="neither"):
        console.parse_reply(f"{body}*{console.checksum(body)}")


def test_requests_encode_and_parse() -> None:
    """Requests end in CRLF; CONFIG-PUSH carries base64 that decodes to the configuration."""
    assert console.encode_request("STATUS") == b"STATUS\r\n"
    push = console.encode_config_push("a: 1\nb: 2\n")
    request = console.parse_request(push)
    assert request.command == console.CONFIG_PUSH
    assert console.decode_config_push(request.argument or "") == "a: 1\nb: 2\n"


@pytest.mark.parametrize("line", ["FOO", "STATUS now", "CONFIG-PUSH", "reboot"])
def test_bad_requests_are_rejected(line: str) -> None:
    """Unknown commands, stray or missing arguments raise ProtocolError."""
    with pytest.raises(ProtocolError):
        console.parse_request(line)


def test_config_push_with_bad_base64_is_rejected() -> None:
    """A CONFIG-PUSH argument that is not base64 raises ProtocolError."""
    with pytest.raises(ProtocolError, match="base64"):
        console.decode_config_push("not base64!")


def test_status_fields_are_typed_and_checked() -> None:
    """parse_status types a STATUS reply and names a missing or bad field."""
    status = console.TerminalStatus("idle", 5, 60, "local", 24, console.config_hash("x"))
    fields = console.parse_reply(console.encode_reply(status.to_fields()))
    assert console.parse_status(fields) == status
    with pytest.raises(ProtocolError, match="heartbeat"):
        console.parse_status({**fields, "heartbeat": "-1"})
    with pytest.raises(ProtocolError, match="lacks cache"):
        console.parse_status({k: v for k, v in fields.items() if k != "cache"})
    with pytest.raises(ProtocolError, match="state"):
        console.parse_status({**fields, "state": "dancing"})


def test_config_hash_is_first_16_hex_digits_of_sha256() -> None:
    """The hash of the empty configuration is sha256('') cut to 16 digits."""
    assert console.config_hash("") == "e3b0c44298fc1c14"


def test_reply_values_with_spaces_cannot_be_encoded() -> None:
    """A value with a space would break the line format, so encoding refuses it."""
    with pytest.raises(ProtocolError, match="value"):
        console.encode_reply({"state": "two words"})
