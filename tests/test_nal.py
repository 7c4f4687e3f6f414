"""Decoder configuration records built from in-band parameter sets, checked byte for byte
against the avcC, hvcC and esds that ffmpeg's MP4 muxer writes for the same encode.

Each clip is encoded once into MPEG-TS, then copied (`-c copy`) into MP4 and into a raw
Annex B (or ADTS) stream, so the parameter sets in all three are the same bytes."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.containers.errors import ProbeError
from agent.containers.nal import (
    aac_config,
    audio_name,
    avc_config,
    codec_name,
    esds_payload,
    hevc_config,
    nal_type,
    unescape,
)

FFMPEG_TIMEOUT = 60
_QUIET_X265 = "log-level=error"


@dataclass(frozen=True)
class VideoCase:
    codec: str  # "h264" or "hevc"
    size: str
    rate: int
    frames: int
    args: tuple[str, ...]


# Sizes that need cropping (180 lines are 11.25 macroblocks, 22.5 HEVC 8x8 blocks), every
# chroma format, high bit depths, fields (frame_mbs_only_flag 0) and temporal sub-layers.
VIDEO_CASES: dict[str, VideoCase] = {
    "h264_high_320x180": VideoCase("h264", "320x180", 25, 3, ("-profile:v", "high")),
    "h264_high_1280x720": VideoCase("h264", "1280x720", 25, 3, ("-profile:v", "high")),
    "h264_baseline_320x180": VideoCase("h264", "320x180", 25, 3, ("-profile:v", "baseline")),
    "h264_main_320x180": VideoCase("h264", "320x180", 25, 3, ("-profile:v", "main")),
    "h264_444_320x180": VideoCase("h264", "320x180", 25, 3, ("-pix_fmt", "yuv444p")),
    "h264_422p10_320x180": VideoCase("h264", "320x180", 25, 3, ("-pix_fmt", "yuv422p10le")),
    "h264_interlaced_320x180": VideoCase("h264", "320x180", 25, 3, ("-flags", "+ildct")),
    # AVC-Intra 100: High 4:2:2 Intra, whose SPS carries scaling matrices; at 1080 lines
    # x264 codes it as fields, so 1088 lines less 4 crop units of 2 (4:2:2 fields).
    "h264_avcintra_1280x720": VideoCase(
        "h264", "1280x720", 50, 1,
        ("-pix_fmt", "yuv422p10le", "-x264-params", "avcintra-class=100"),
    ),
    "h264_avcintra_1920x1080": VideoCase(
        "h264", "1920x1080", 25, 1,
        ("-pix_fmt", "yuv422p10le", "-x264-params", "avcintra-class=100"),
    ),
    "hevc_main_640x360": VideoCase("hevc", "640x360", 25, 3, ("-x265-params", _QUIET_X265)),
    "hevc_main_320x180": VideoCase("hevc", "320x180", 25, 3, ("-x265-params", _QUIET_X265)),
    "hevc_sublayers_320x180": VideoCase(
        "hevc", "320x180", 25, 5, ("-x265-params", _QUIET_X265 + ":temporal-layers=1")
    ),
    "hevc_422p10_320x180": VideoCase(
        "hevc", "320x180", 25, 3, ("-pix_fmt", "yuv422p10le", "-x265-params", _QUIET_X265)
    ),
    "hevc_444p12_320x180": VideoCase(
        "hevc", "320x180", 25, 3, ("-pix_fmt", "yuv444p12le", "-x265-params", _QUIET_X265)
    ),
    "hevc_gray_320x180": VideoCase(
        "hevc", "320x180", 25, 3, ("-pix_fmt", "gray", "-x265-params", _QUIET_X265)
    ),
}  # fmt: skip

AUDIO_CASES: dict[str, tuple[int, int]] = {
    "aac_48000_mono": (48000, 1),
    "aac_44100_stereo": (44100, 2),
}


@dataclass(frozen=True)
class Clip:
    annexb: bytes  # the elementary stream as the TS carries it (raw H.264/HEVC or ADTS)
    mp4: bytes


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=FFMPEG_TIMEOUT,
    )  # fmt: skip


def _encode(base: Path, name: str, source: list[str], codec: list[str], raw: str) -> Clip:
    """Encodes into MPEG-TS, then copies that into MP4 and into the raw stream."""
    ts, mp4, annexb = base / f"{name}.ts", base / f"{name}.mp4", base / f"{name}.{raw}"
    _ffmpeg(*source, *codec, "-f", "mpegts", str(ts))
    # hvc1 (not ffmpeg's default hev1) makes ffmpeg set array_completeness, as we do.
    tag = ["-tag:v", "hvc1"] if raw == "hevc" else []
    _ffmpeg("-i", str(ts), "-c", "copy", *tag, "-f", "mp4", str(mp4),
            "-c", "copy", "-f", raw, str(annexb))  # fmt: skip
    return Clip(annexb.read_bytes(), mp4.read_bytes())


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """Every case of VIDEO_CASES and AUDIO_CASES, encoded once by real ffmpeg."""
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed (apt-get install ffmpeg)")
    base = tmp_path_factory.mktemp("nal")
    out: dict[str, Clip] = {}
    for name, case in VIDEO_CASES.items():
        source = ["-f", "lavfi", "-i", f"testsrc2=size={case.size}:rate={case.rate}"]
        encoder = "libx264" if case.codec == "h264" else "libx265"
        codec = ["-frames:v", str(case.frames), "-c:v", encoder, *case.args]
        out[name] = _encode(base, name, source, codec, case.codec)
    for name, (rate, channels) in AUDIO_CASES.items():
        source = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration=0.5"]
        codec = ["-c:a", "aac", "-ac", str(channels), "-b:a", "64k"]
        out[name] = _encode(base, name, source, codec, "adts")
    return out


def _split_annexb(stream: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (H.264 B.2, H.265 B.3): split on the
    00 00 01 start code prefixes, leading and trailing zero_byte/trailing_zero_8bits
    dropped (a NAL unit never ends in 0x00: 7.4.1, rbsp_trailing_bits)."""
    return [part.rstrip(b"\x00") for part in stream.split(b"\x00\x00\x01")[1:]]


def _parameter_sets(stream: bytes, codec: str, kind: int) -> list[bytes]:
    """The distinct NAL units of one type, in stream order."""
    found: list[bytes] = []
    for nal in _split_annexb(stream):
        if nal and nal_type(nal, codec) == kind and nal not in found:
            found.append(nal)
    return found


def _box(mp4: bytes, fourcc: bytes) -> bytes:
    """The payload of the first box of this type (ISO/IEC 14496-12 4.2: 32-bit size, then
    the type); the 4CC does not occur by chance in these small files."""
    at = mp4.find(fourcc)
    assert at >= 4, f"no {fourcc!r} in the MP4"
    size = int.from_bytes(mp4[at - 4 : at], "big")
    return mp4[at + 4 : at - 4 + size]


@dataclass(frozen=True)
class Avcc:
    head: bytes  # configurationVersion .. numOfSequenceParameterSets
    sps: list[bytes]
    pps: list[bytes]
    tail: bytes  # the high-profile fields, if any


def _read_avcc(record: bytes) -> Avcc:
    """ISO/IEC 14496-15 5.3.3.1.2, read plainly."""
    at, sps, pps = 6, [], []
    for _ in range(record[5] & 0x1F):
        size = int.from_bytes(record[at : at + 2], "big")
        sps.append(record[at + 2 : at + 2 + size])
        at += 2 + size
    count, at = record[at], at + 1
    for _ in range(count):
        size = int.from_bytes(record[at : at + 2], "big")
        pps.append(record[at + 2 : at + 2 + size])
        at += 2 + size
    return Avcc(record[:6], sps, pps, record[at:])


def _read_hvcc(record: bytes) -> tuple[bytes, dict[int, tuple[int, list[bytes]]]]:
    """ISO/IEC 14496-15 8.3.3.1.2: the 22 fixed bytes, and per NAL_unit_type the
    array_completeness and NAL units."""
    arrays: dict[int, tuple[int, list[bytes]]] = {}
    at = 23
    for _ in range(record[22]):
        kind, count = record[at], int.from_bytes(record[at + 1 : at + 3], "big")
        at += 3
        nals = []
        for _ in range(count):
            size = int.from_bytes(record[at : at + 2], "big")
            nals.append(record[at + 2 : at + 2 + size])
            at += 2 + size
        arrays[kind & 0x3F] = (kind >> 7, nals)
    assert at == len(record)
    return record[:22], arrays


def _expected_size(name: str) -> tuple[int, int]:
    width, height = VIDEO_CASES[name].size.split("x")
    return int(width), int(height)


H264_CASES = [name for name, case in VIDEO_CASES.items() if case.codec == "h264"]
HEVC_CASES = [name for name, case in VIDEO_CASES.items() if case.codec == "hevc"]


@pytest.mark.parametrize("name", [n for n in H264_CASES if "avcintra" not in n])
def test_avc_config_is_ffmpegs_avcc(clips: dict[str, Clip], name: str) -> None:
    clip = clips[name]
    sps = _parameter_sets(clip.annexb, "h264", 7)
    pps = _parameter_sets(clip.annexb, "h264", 8)
    assert len(sps) == 1
    assert len(pps) == 1
    record, width, height = avc_config(sps, pps)
    assert record == _box(clip.mp4, b"avcC")
    assert (width, height) == _expected_size(name)
    tails = {
        "baseline": b"",
        "main": b"",
        "444": b"\xff\xf8\xf8\x00",
        "422p10": b"\xfe\xfa\xfa\x00",
    }
    expected = next(
        (tail for key, tail in tails.items() if f"_{key}_" in name), b"\xfd\xf8\xf8\x00"
    )
    assert _read_avcc(record).tail == expected  # chroma_format, bit depths, no SPS extensions


@pytest.mark.parametrize("name", [n for n in H264_CASES if "avcintra" in n])
def test_avc_config_reads_past_scaling_matrices(clips: dict[str, Clip], name: str) -> None:
    """x264 pads AVC-Intra's SPS and PPS with hundreds of zero bytes. In the byte stream
    these are trailing_zero_8bits, outside the NAL unit (H.264 B.1.1), but ffmpeg keeps
    most of them inside the NAL units it stores in avcC (ending them at whichever start
    code its extradata splitter stopped at). So from ffmpeg's own NAL units our record
    is ffmpeg's byte for byte, and from the in-band ones (zeros dropped) it differs only
    in the NAL units' lengths."""
    clip = clips[name]
    ffmpegs = _read_avcc(_box(clip.mp4, b"avcC"))
    record, width, height = avc_config(ffmpegs.sps, ffmpegs.pps)
    assert record == _box(clip.mp4, b"avcC")
    assert (width, height) == _expected_size(name)
    assert record[1] == 122  # High 4:2:2 Intra: the SPS has seq_scaling_matrix_present_flag
    assert ffmpegs.tail == b"\xfe\xfa\xfa\x00"  # 4:2:2, 10-bit luma and chroma

    sps = _parameter_sets(clip.annexb, "h264", 7)
    pps = _parameter_sets(clip.annexb, "h264", 8)
    in_band, width2, height2 = avc_config(sps, pps)
    assert (width2, height2) == (width, height)
    ours = _read_avcc(in_band)
    assert (ours.head, ours.tail) == (ffmpegs.head, ffmpegs.tail)
    assert ours.sps == [nal.rstrip(b"\x00") for nal in ffmpegs.sps]
    assert ours.pps == [nal.rstrip(b"\x00") for nal in ffmpegs.pps]


@pytest.mark.parametrize("name", HEVC_CASES)
def test_hevc_config_is_ffmpegs_hvcc(clips: dict[str, Clip], name: str) -> None:
    """Byte for byte, including the fields ffmpeg derives elsewhere: it takes
    min_spatial_segmentation_idc from the VUI's bitstream_restriction (which x265 does not
    write, so 0 as ours), parallelismType from the PPS but zeroes it when
    min_spatial_segmentation_idc is 0, and always writes avgFrameRate and
    constantFrameRate 0."""
    clip = clips[name]
    vps = _parameter_sets(clip.annexb, "hevc", 32)
    sps = _parameter_sets(clip.annexb, "hevc", 33)
    pps = _parameter_sets(clip.annexb, "hevc", 34)
    assert (len(vps), len(sps), len(pps)) == (1, 1, 1)
    record, width, height = hevc_config(vps, sps, pps)
    assert record == _box(clip.mp4, b"hvcC")
    assert (width, height) == _expected_size(name)
    fixed, arrays = _read_hvcc(record)
    assert arrays == {32: (1, vps), 33: (1, sps), 34: (1, pps)}
    layers = (fixed[21] >> 3) & 7
    assert layers == (2 if name == "hevc_sublayers_320x180" else 1)
    chroma = {"422p10": (2, 2), "444p12": (3, 4), "gray": (0, 0)}
    expected = next((v for k, v in chroma.items() if k in name), (1, 0))
    assert (fixed[16] & 3, fixed[17] & 7) == expected  # chromaFormat, bitDepthLumaMinus8


@pytest.mark.parametrize("name", list(AUDIO_CASES))
def test_aac_config_is_ffmpegs_decoder_specific_info(clips: dict[str, Clip], name: str) -> None:
    clip = clips[name]
    config, rate, channels = aac_config(clip.annexb[:7])
    assert (rate, channels) == AUDIO_CASES[name]
    ffmpegs = _box(clip.mp4, b"esds")[4:]  # after version and flags
    assert _decoder_specific_info(ffmpegs) == config

    ours = esds_payload(config)
    assert _decoder_specific_info(ours) == config
    # ffmpeg writes the track's ID as ES_ID (ISO/IEC 14496-14 3.1.2 says 0 as stored) and
    # the bit rates it measured; everything else is the same bytes.
    assert len(ours) == len(ffmpegs)
    assert _mask_esds(ours) == _mask_esds(ffmpegs)
    assert _mask_esds(esds_payload(config, 96000)) == _mask_esds(ffmpegs)
    assert esds_payload(config, 96000)[18:26] == (96000).to_bytes(4, "big") * 2


def _descriptors(data: bytes) -> list[tuple[int, bytes]]:
    """ISO/IEC 14496-1 8.3.3: tag, sizeOfInstance in 7-bit groups, body."""
    out, at = [], 0
    while at < len(data):
        tag, size = data[at], 0
        at += 1
        while True:
            byte = data[at]
            at += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        assert at + size <= len(data)
        out.append((tag, data[at : at + size]))
        at += size
    return out


def _decoder_specific_info(esds: bytes) -> bytes:
    [(tag, es)] = _descriptors(esds)
    assert tag == 0x03
    assert es[2] == 0  # no stream dependence, URL or OCR stream
    inner = dict(_descriptors(es[3:]))
    assert inner[0x06] == b"\x02"  # SLConfigDescriptor predefined 2
    decoder = inner[0x04]
    assert decoder[:2] == b"\x40\x15"  # Audio ISO/IEC 14496-3; audio stream, reserved 1
    [(tag, info)] = _descriptors(decoder[13:])
    assert tag == 0x05
    return info


def _mask_esds(esds: bytes) -> bytes:
    """ES_ID, bufferSizeDB, maxBitrate and avgBitrate zeroed (4-byte length forms)."""
    masked = bytearray(esds)
    masked[5:7] = bytes(2)
    masked[15:26] = bytes(11)
    return bytes(masked)


def test_nal_type_reads_both_headers(clips: dict[str, Clip]) -> None:
    h264 = {nal_type(nal, "h264") for nal in _split_annexb(clips["h264_high_320x180"].annexb)}
    assert {5, 6, 7, 8} <= h264  # IDR slice, SEI, SPS, PPS (H.264 Table 7-1)
    hevc = {nal_type(nal, "hevc") for nal in _split_annexb(clips["hevc_main_320x180"].annexb)}
    assert {32, 33, 34, 39} <= hevc  # VPS, SPS, PPS, prefix SEI (H.265 Table 7-1)
    assert nal_type(b"\x40\x01", "hevc") == 32
    assert nal_type(b"\x67", "h264") == 7
    with pytest.raises(ValueError, match="codec"):
        nal_type(b"\x67", "vp9")
    with pytest.raises(ProbeError):
        nal_type(b"", "h264")


# -- emulation prevention -------------------------------------------------------------


def _escape(rbsp: bytes) -> bytes:
    """H.264 7.4.1 / H.265 7.4.2 in reverse: 0x03 after two zeros that precede a byte
    of 0 to 3, or end the RBSP on a zero, done the slow way."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    if zeros >= 2:
        out.append(3)
    return bytes(out)


def _unescape_slowly(nal: bytes) -> bytes:
    """The NAL unit syntax loop of H.264 7.3.1, byte by byte."""
    out, at = bytearray(), 0
    while at < len(nal):
        if at + 2 < len(nal) and nal[at : at + 3] == b"\x00\x00\x03":
            out += b"\x00\x00"
            at += 3
        else:
            out.append(nal[at])
            at += 1
    return bytes(out)


def test_unescape_removes_emulation_prevention() -> None:
    assert unescape(b"\x67\x00\x00\x03\x01") == b"\x67\x00\x00\x01"
    assert unescape(b"\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x00\x00"
    assert unescape(b"\x00\x00\x03\x03") == b"\x00\x00\x03"
    assert unescape(b"\x01\x00\x03\x00") == b"\x01\x00\x03\x00"
    assert unescape(b"") == b""
    rng = random.Random(7)
    for _ in range(500):
        rbsp = bytes(rng.choice((0, 0, 0, 1, 2, 3, 0x80)) for _ in range(rng.randrange(64)))
        escaped = _escape(rbsp)
        assert b"\x00\x00\x00" not in escaped
        assert unescape(escaped) == rbsp == _unescape_slowly(escaped)


def test_unescape_removes_every_emulation_prevention_byte() -> None:
    """4 MiB with an emulation prevention byte every 8 bytes: each removed, nothing else."""
    nal = (b"\x00\x00\x03\x01\x02\x03\x04\x05" * (1 << 19)) + b"\x80"
    out = unescape(nal)
    assert out == (b"\x00\x00\x01\x02\x03\x04\x05" * (1 << 19)) + b"\x80"


# -- synthetic parameter sets: the branches x264 and x265 do not take ----------------


class _Bits:
    """Writes u(n), ue(v) and se(v) (H.264 7.2, 9.1), ending with rbsp_trailing_bits."""

    def __init__(self) -> None:
        self._bits: list[str] = []

    def u(self, n: int, value: int) -> _Bits:
        if n:
            self._bits.append(format(value, f"0{n}b"))
        return self

    def ue(self, value: int) -> _Bits:
        code = format(value + 1, "b")
        self._bits.append("0" * (len(code) - 1) + code)
        return self

    def se(self, value: int) -> _Bits:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: bytes) -> bytes:
        text = "".join(self._bits) + "1"
        text += "0" * (-len(text) % 8)
        return header + _escape(int(text, 2).to_bytes(len(text) // 8, "big"))


@dataclass(frozen=True)
class AvcSps:
    profile_idc: int = 100
    chroma_format_idc: int = 1
    separate_colour_plane: int = 0
    bit_depth_minus8: int = 0
    scaling_lists: tuple[tuple[int, ...] | None, ...] | None = None  # delta_scale per list
    poc_type: int = 0
    poc_cycle: tuple[int, ...] = ()
    width_mbs: int = 20
    height_map_units: int = 12
    frame_mbs_only: int = 1
    crop: tuple[int, int, int, int] | None = None

    def nal(self) -> bytes:
        """seq_parameter_set_data() of H.264 7.3.2.1.1, with a VUI-less tail."""
        bits = _Bits().u(8, self.profile_idc).u(8, 0).u(8, 31).ue(0)
        if self.profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            bits.ue(self.chroma_format_idc)
            if self.chroma_format_idc == 3:
                bits.u(1, self.separate_colour_plane)
            bits.ue(self.bit_depth_minus8).ue(self.bit_depth_minus8).u(1, 0)
            bits.u(1, self.scaling_lists is not None)
            for deltas in self.scaling_lists or ():
                bits.u(1, deltas is not None)
                for delta in deltas or ():
                    bits.se(delta)
        bits.ue(0).ue(self.poc_type)
        if self.poc_type == 0:
            bits.ue(2)
        elif self.poc_type == 1:
            bits.u(1, 0).se(-3).se(5).ue(len(self.poc_cycle))
            for offset in self.poc_cycle:
                bits.se(offset)
        bits.ue(4).u(1, 0).ue(self.width_mbs - 1).ue(self.height_map_units - 1)
        bits.u(1, self.frame_mbs_only)
        if not self.frame_mbs_only:
            bits.u(1, 1)
        bits.u(1, 1).u(1, self.crop is not None)
        for offset in self.crop or ():
            bits.ue(offset)
        bits.u(1, 0)  # vui_parameters_present_flag
        return bits.nal(b"\x67")


_PPS = b"\x68\xee\x3c\x80"


@pytest.mark.parametrize(
    ("sps", "size"),
    [
        # pic_order_cnt_type 1 and its offset_for_ref_frame loop
        (AvcSps(poc_type=1, poc_cycle=(1, -2, 300)), (320, 192)),
        (AvcSps(poc_type=2, crop=(1, 2, 3, 4)), (320 - 2 * 3, 192 - 2 * 7)),
        # 4:2:2 fields: CropUnitY = SubHeightC * 2
        (AvcSps(chroma_format_idc=2, frame_mbs_only=0, crop=(0, 0, 0, 3)), (320, 384 - 6)),
        # monochrome: CropUnitX 1, CropUnitY 2 - frame_mbs_only_flag
        (AvcSps(chroma_format_idc=0, frame_mbs_only=0, crop=(1, 0, 0, 2)), (319, 380)),
        # separate colour planes: ChromaArrayType 0
        (AvcSps(profile_idc=244, chroma_format_idc=3, separate_colour_plane=1, crop=(3, 0, 0, 5)),
         (317, 187)),
        # 12 scaling lists for 4:4:4: the 4x4 lists hold 16 deltas, the 8x8 ones 64, a list
        # ends early when nextScale reaches 0, and absent lists take nothing
        (AvcSps(profile_idc=244, chroma_format_idc=3,
                scaling_lists=((-8,), None, (1,) * 16, (0, -8), None, (2,) * 16,
                               (-3,) * 64, (-8,), (5, -100, 95, -8), None, (1,) * 64, None),
                crop=(0, 0, 0, 1)), (320, 191)),
        # 8 lists otherwise, including the -128..127 extremes of delta_scale
        (AvcSps(bit_depth_minus8=2, scaling_lists=((127, -128, 1) + (0,) * 13,) + (None,) * 7),
         (320, 192)),
        (AvcSps(profile_idc=66, width_mbs=1024, height_map_units=1024), (16384, 16384)),
    ],
)  # fmt: skip
def test_avc_config_follows_every_branch_of_the_sps(sps: AvcSps, size: tuple[int, int]) -> None:
    record, width, height = avc_config([sps.nal()], [_PPS])
    assert (width, height) == size
    parsed = _read_avcc(record)
    assert parsed.head == bytes([1, sps.profile_idc, 0, 31, 0xFF, 0xE1])
    assert (parsed.sps, parsed.pps) == ([sps.nal()], [_PPS])
    if sps.profile_idc == 66:
        assert parsed.tail == b""
    else:
        depth = 0xF8 | sps.bit_depth_minus8
        assert parsed.tail == bytes([0xFC | sps.chroma_format_idc, depth, depth, 0])


def _hevc_sps(
    sub_layers: tuple[tuple[int, int], ...] = (),
    chroma_format_idc: int = 1,
    size: tuple[int, int] = (320, 184),
    window: tuple[int, int, int, int] | None = None,
    bit_depth_minus8: int = 0,
) -> bytes:
    """seq_parameter_set_rbsp() of H.265 7.3.2.2.1 up to the bit depths; `sub_layers` is
    (sub_layer_profile_present_flag, sub_layer_level_present_flag) per sub-layer."""
    bits = _Bits().u(4, 0).u(3, len(sub_layers)).u(1, 1)
    bits.u(2, 0).u(1, 0).u(5, 4).u(32, 0x08000000).u(48, 0x9F0000000000).u(8, 123)
    for profile, level in sub_layers:
        bits.u(1, profile).u(1, level)
    if sub_layers:
        bits.u(2 * (8 - len(sub_layers)), 0)
    for profile, level in sub_layers:
        if profile:
            bits.u(88, (1 << 88) - 1)  # all ones, so a misread shows
        if level:
            bits.u(8, 0xFF)
    bits.ue(0).ue(chroma_format_idc)
    if chroma_format_idc == 3:
        bits.u(1, 0)
    bits.ue(size[0]).ue(size[1]).u(1, window is not None)
    for offset in window or ():
        bits.ue(offset)
    bits.ue(bit_depth_minus8).ue(bit_depth_minus8).ue(4)
    return bits.nal(b"\x42\x01")


_VPS = b"\x40\x01\x0c\x01"
_HEVC_PPS = b"\x44\x01\xc1\x72"


@pytest.mark.parametrize(
    ("sps", "size", "layers"),
    [
        (_hevc_sps(), (320, 184), 1),
        (_hevc_sps(window=(0, 0, 0, 2)), (320, 180), 1),
        (_hevc_sps(sub_layers=((1, 1), (0, 1), (1, 0)), window=(1, 2, 3, 4)), (314, 170), 4),
        (_hevc_sps(sub_layers=((0, 0),) * 6, chroma_format_idc=2, window=(1, 1, 1, 1)),
         (316, 182), 7),
        (_hevc_sps(chroma_format_idc=3, window=(1, 1, 1, 1), bit_depth_minus8=4), (318, 182), 1),
        (_hevc_sps(chroma_format_idc=0, window=(1, 0, 0, 1)), (319, 183), 1),
    ],
)  # fmt: skip
def test_hevc_config_skips_sub_layers(sps: bytes, size: tuple[int, int], layers: int) -> None:
    record, width, height = hevc_config([_VPS], [sps], [_HEVC_PPS])
    assert (width, height) == size
    fixed, arrays = _read_hvcc(record)
    assert fixed[1:13] == bytes.fromhex("04 08000000 9f0000000000 7b")
    assert fixed[13:16] == b"\xf0\x00\xfc"
    assert fixed[21] == (layers << 3) | 4 | 3
    assert arrays == {32: (1, [_VPS]), 33: (1, [sps]), 34: (1, [_HEVC_PPS])}


# -- malformed input ------------------------------------------------------------------


def _real_sets(clips: dict[str, Clip]) -> list[tuple[str, bytes]]:
    found = []
    for name, case in VIDEO_CASES.items():
        kind = 7 if case.codec == "h264" else 33
        found += [
            (case.codec, sps) for sps in _parameter_sets(clips[name].annexb, case.codec, kind)
        ]
    return found


def _parse(codec: str) -> Callable[[bytes], tuple[bytes, int, int]]:
    if codec == "h264":
        return lambda sps: avc_config([sps], [_PPS])
    return lambda sps: hevc_config([_VPS], [sps], [_HEVC_PPS])


def test_truncated_sps_raises_probe_error_or_reads_the_same(clips: dict[str, Clip]) -> None:
    """Every prefix of every real SPS: either too short (ProbeError), or long enough that
    what it was read for (the fields through the cropping) is all there."""
    for codec, sps in _real_sets(clips):
        parse = _parse(codec)
        _, width, height = parse(sps)
        complete = None
        for length in range(len(sps)):
            try:
                _, width2, height2 = parse(sps[:length])
            except ProbeError:
                assert complete is None, "a longer prefix was read, but not this one"
                continue
            complete = length if complete is None else complete
            assert (width2, height2) == (width, height)
        assert complete is not None
        assert complete > 4


def test_garbage_sps_raises_probe_error() -> None:
    """Random bytes behind an SPS header give a plausible size or ProbeError, never
    another exception."""
    rng = random.Random(2024)
    for _ in range(3000):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        for codec, header in (("h264", b"\x67"), ("hevc", b"\x42\x01")):
            try:
                _, width, height = _parse(codec)(header + body)
            except ProbeError:
                continue
            assert 0 < width <= 16384
            assert 0 < height <= 16384


@pytest.mark.parametrize(
    "call",
    [
        lambda: avc_config([AvcSps(crop=(0, 0, 96, 0)).nal()], [_PPS]),  # cropped to nothing
        lambda: avc_config([AvcSps(width_mbs=1100).nal()], [_PPS]),  # 17600 wide
        lambda: avc_config([AvcSps(chroma_format_idc=4).nal()], [_PPS]),
        lambda: avc_config([AvcSps(bit_depth_minus8=7).nal()], [_PPS]),
        lambda: avc_config([AvcSps(scaling_lists=((128,),) + (None,) * 7).nal()], [_PPS]),
        lambda: avc_config([AvcSps(poc_type=3).nal()], [_PPS]),
        lambda: avc_config([b"\x67\x64\x00\x1f" + bytes(40)], [_PPS]),  # ue(v) of 320 zeros
        lambda: avc_config([b"\x67\x64"], [_PPS]),
        lambda: avc_config([], [_PPS]),
        lambda: avc_config([AvcSps().nal()], []),
        lambda: avc_config([_PPS], [_PPS]),  # a PPS where the SPS goes
        lambda: avc_config([AvcSps().nal()], [AvcSps().nal()]),
        lambda: avc_config([AvcSps().nal()] * 32, [_PPS]),
        lambda: avc_config([AvcSps().nal()], [_PPS + bytes(70000)]),
        lambda: avc_config([b"\xe7" + AvcSps().nal()[1:]], [_PPS]),  # forbidden_zero_bit
        lambda: hevc_config([_VPS], [_hevc_sps(size=(0, 184))], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps(size=(320, 20000))], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps(window=(100, 100, 0, 0))], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps(sub_layers=((0, 0),) * 7)], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps(bit_depth_minus8=8)], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps(chroma_format_idc=4)], [_HEVC_PPS]),
        lambda: hevc_config([], [_hevc_sps()], [_HEVC_PPS]),
        lambda: hevc_config([_VPS], [_hevc_sps()], [_VPS]),
        lambda: hevc_config([_VPS], [b"\x42\x01\x01"], [_HEVC_PPS]),
    ],
)
def test_malformed_parameter_sets_raise_probe_error(
    call: Callable[[], tuple[bytes, int, int]],
) -> None:
    with pytest.raises(ProbeError):
        call()


def test_aac_config_reads_the_adts_header() -> None:
    # profile 1 (LC), index 3 (48 kHz), 2 channels, then frame length and fullness
    header = bytes([0xFF, 0xF1, 0x4C, 0x80, 0x2E, 0x7F, 0xFC])
    assert aac_config(header) == (b"\x11\x90", 48000, 2)
    seven = bytes([0xFF, 0xF1, 0x51, 0xC0, 0x2E, 0x7F, 0xFC])  # index 4, configuration 7
    assert aac_config(seven) == (bytes([0x12, 0x38]), 44100, 8)
    for bad in (
        header[:6],
        b"\xff\xe1" + header[2:],  # syncword
        b"\xff\xf3" + header[2:],  # layer 1
        bytes([0xFF, 0xF1, 0x74, 0x80]) + header[4:],  # sampling_frequency_index 13
        bytes([0xFF, 0xF1, 0x4C, 0x00]) + header[4:],  # channel_configuration 0
    ):
        with pytest.raises(ProbeError):
            aac_config(bad)


def test_esds_payload_layout() -> None:
    esds = esds_payload(b"\x11\x90", 128000)
    assert esds.hex(" ") == (
        "03 80 80 80 22 00 00 00"
        " 04 80 80 80 14 40 15 00 00 00 00 01 f4 00 00 01 f4 00"
        " 05 80 80 80 02 11 90"
        " 06 80 80 80 01 02"
    )
    with pytest.raises(ValueError, match="bitrate"):
        esds_payload(b"\x11\x90", 1 << 32)


def test_codec_names_are_rfc_6381s() -> None:
    """avc1 with profile, compatibility and level in hex; hvc1 as ISO/IEC 14496-15 E.3
    writes it (Apple's `hvc1.1.6.L93.B0` form): the compatibility flags' bits reversed,
    trailing zero constraint bytes left out; nothing for a record cut short."""
    assert codec_name("avc1", bytes([1, 0x64, 0x00, 0x1F, 0xFF])) == "avc1.64001f"
    main = bytes([1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93])
    assert codec_name("hvc1", main) == "hvc1.1.6.L93.b0"
    main10_high = bytes([1, 0x22, 0x20, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120])
    assert codec_name("hev1", main10_high) == "hev1.2.4.H120.90"
    assert codec_name("hvc1", main[:12]) == ""
    assert codec_name("vp09", main) == ""


@pytest.mark.parametrize(
    ("config", "name"), [(b"\x12\x10", "mp4a.40.2"), (b"\x2b\x92", "mp4a.40.5")]
)
def test_an_aac_streams_name_is_its_object_type(config: bytes, name: str) -> None:
    payload = esds_payload(config)
    entry = b"\0" * 36 + (12 + len(payload)).to_bytes(4, "big") + b"esds\0\0\0\0" + payload
    assert audio_name(entry) == name
    cut = entry.index(b"esds") + 20  # within the DecoderConfigDescriptor
    assert audio_name(entry[:cut]) == ""  # cut short: not said rather than guessed
    assert audio_name(b"") == ""
