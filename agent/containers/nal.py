"""H.264 and HEVC parameter sets and AAC headers, as an MPEG-TS carries them in-band, turned
into what an MP4 sample entry needs: the avcC and hvcC decoder configuration records, the
picture size after cropping, and the AudioSpecificConfig and esds of an ADTS stream.

Each function takes NAL units without their Annex B start codes or the zero bytes around
them (ITU-T H.264 B.1.1, H.265 B.2.1) and is pure: bytes in, bytes and numbers out, or one
ProbeError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ProbeError
from .mpegts import ADTS_RATES

MAX_DIMENSION = 16384  # wider or taller than this is taken for a corrupt parameter set
_MAX_NAL = 0xFFFF  # avcC and hvcC store each NAL unit's length in 16 bits

# H.264 7.3.2.1.1: the profiles whose SPS carries chroma_format_idc, bit depths and scaling
# matrices.
_AVC_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# ISO/IEC 14496-15 5.3.3.1.2: every profile but Baseline, Main and Extended has the
# record's chroma and bit depth fields (ffmpeg's ff_isom_write_avcc tests the same).
_AVC_PROFILES_WITHOUT_EXTENSION = frozenset({66, 77, 88})

# H.264 and H.265 Table 6-1: SubWidthC and SubHeightC by chroma_format_idc (monochrome and
# separate colour planes have no chroma to subsample).
_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}

_AVC_SPS, _AVC_PPS = 7, 8  # H.264 Table 7-1 nal_unit_type
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34  # H.265 Table 7-1 nal_unit_type

_AAC_RATES = ADTS_RATES  # ISO/IEC 14496-3 1.6.3.4 Table 1.18 samplingFrequencyIndex
# ISO/IEC 14496-3 1.6.3.5 Table 1.19 channelConfiguration 1 to 7; 0 (a program_config_element
# in the stream) is not supported.
_AAC_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)


class BitReader:
    """Reads an RBSP most significant bit first: u(n), ue(v) and se(v) of H.264 7.2 and
    H.265 7.2, with exp-Golomb codes per H.264 9.1 and H.265 9.2.

    Reading past the end raises ProbeError; each read touches only the bytes it needs."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8

    def _peek(self, n: int) -> int:
        first = self._pos >> 3
        last = (self._pos + n + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        return (chunk >> ((last << 3) - self._pos - n)) & ((1 << n) - 1)

    def u(self, n: int) -> int:
        """u(n): an n-bit unsigned integer (H.264 7.2, H.265 7.2)."""
        if n == 0:
            return 0
        if self._pos + n > self._end:
            raise ProbeError("parameter set is truncated")
        value = self._peek(n)
        self._pos += n
        return value

    def flag(self) -> bool:
        """u(1) as a flag."""
        return bool(self.u(1))

    def skip(self, n: int) -> None:
        """Skips n bits, which must be there."""
        if self._pos + n > self._end:
            raise ProbeError("parameter set is truncated")
        self._pos += n

    def ue(self) -> int:
        """ue(v): an unsigned exp-Golomb code of at most 32 leading zero bits (H.264 9.1,
        H.265 9.2), so at most 2**32 - 2 as both standards allow."""
        window = min(32, self._end - self._pos)
        if window <= 0:
            raise ProbeError("parameter set is truncated")
        head = self._peek(window)
        zeros = window - head.bit_length()
        if head == 0:
            raise ProbeError(
                "parameter set is truncated" if window < 32 else "exp-Golomb code too long"
            )
        self._pos += zeros + 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """se(v): a signed exp-Golomb code, mapped per H.264 Table 9-3 and H.265 9.2.2."""
        code = self.ue()
        return (code + 1) >> 1 if code & 1 else -(code >> 1)

    def ue_max(self, limit: int, name: str) -> int:
        """ue(v) that the standard bounds by `limit`; anything above is a corrupt set."""
        value = self.ue()
        if value > limit:
            raise ProbeError(f"{name} {value} out of range")
        return value


def nal_type(nal: bytes, codec: str) -> int:
    """The nal_unit_type in a NAL unit's header: H.264 7.3.1 (the low 5 bits of the first
    byte) or H.265 7.3.1.2 (6 bits after forbidden_zero_bit)."""
    if not nal:
        raise ProbeError("empty NAL unit")
    if codec == "h264":
        return nal[0] & 0x1F
    if codec == "hevc":
        return (nal[0] >> 1) & 0x3F
    raise ValueError(f"unknown codec {codec!r}")


def unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: each emulation_prevention_three_byte (the 0x03 of 00 00 03)
    removed, H.264 7.4.1 and H.265 7.4.2.

    bytes.split scans left to right without overlap, as the NAL unit syntax does (H.264
    7.3.1, H.265 7.3.1.1), and runs in C."""
    if b"\x00\x00\x03" not in nal:
        return bytes(nal)
    return b"\x00\x00".join(nal.split(b"\x00\x00\x03"))


@dataclass(frozen=True)
class _AvcSps:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int
    width: int
    height: int


def _skip_avc_scaling_list(bits: BitReader, size: int) -> None:
    """H.264 7.3.2.1.1.1 scaling_list(): delta_scale is read until nextScale becomes 0."""
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta_scale = bits.se()
            if not -128 <= delta_scale <= 127:  # H.264 7.4.2.1.1.1
                raise ProbeError(f"delta_scale {delta_scale} out of range")
            next_scale = (last_scale + delta_scale + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


def _check_size(width: int, height: int) -> tuple[int, int]:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ProbeError(f"implausible picture size {width}x{height}")
    return width, height


def _avc_sps(nal: bytes) -> _AvcSps:
    """The fields of an H.264 seq_parameter_set_data() (7.3.2.1.1) that avcC and the
    picture size need, read through frame_cropping."""
    if len(nal) < 4 or nal[0] & 0x80 or nal_type(nal, "h264") != _AVC_SPS:
        raise ProbeError("not an H.264 SPS")
    bits = BitReader(unescape(nal)[1:])  # 7.3.1: one byte of NAL unit header
    profile_idc = bits.u(8)
    constraint_flags = bits.u(8)  # constraint_set0..5_flag, reserved_zero_2bits
    level_idc = bits.u(8)
    bits.ue_max(31, "seq_parameter_set_id")
    chroma_format_idc, separate_colour_plane = 1, False  # 7.4.2.1.1: inferred when absent
    bit_depth_luma_minus8 = bit_depth_chroma_minus8 = 0
    if profile_idc in _AVC_HIGH_PROFILES:
        chroma_format_idc = bits.ue_max(3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = bits.flag()
        bit_depth_luma_minus8 = bits.ue_max(6, "bit_depth_luma_minus8")
        bit_depth_chroma_minus8 = bits.ue_max(6, "bit_depth_chroma_minus8")
        bits.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.flag():  # seq_scaling_list_present_flag[i]
                    _skip_avc_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue_max(12, "log2_max_frame_num_minus4")
    pic_order_cnt_type = bits.ue_max(2, "pic_order_cnt_type")
    if pic_order_cnt_type == 0:
        bits.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    elif pic_order_cnt_type == 1:
        bits.skip(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")):
            bits.se()  # offset_for_ref_frame[i]
    bits.ue()  # max_num_ref_frames
    bits.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_in_mbs = bits.ue_max(MAX_DIMENSION // 16, "pic_width_in_mbs_minus1") + 1
    height_in_map_units = bits.ue_max(MAX_DIMENSION // 16, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.skip(1)  # mb_adaptive_frame_field_flag
    bits.skip(1)  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if bits.flag():  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    # 7.4.2.1.1 CropUnitX and CropUnitY (7-19 to 7-22), Table 6-1: crop offsets count in
    # chroma samples, and in pairs of lines when fields are coded.
    if separate_colour_plane or chroma_format_idc == 0:  # ChromaArrayType 0
        crop_x, crop_y = 1, 2 - frame_mbs_only
    else:
        sub_width, sub_height = _SUBSAMPLING[chroma_format_idc]
        crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
    width, height = _check_size(
        width_in_mbs * 16 - crop_x * (left + right),  # PicWidthInMbs (7-13)
        (2 - frame_mbs_only) * height_in_map_units * 16 - crop_y * (top + bottom),  # (7-18)
    )
    return _AvcSps(
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width,
        height,
    )


def _length_prefixed(nals: Sequence[bytes]) -> bytes:
    """Each NAL unit as a 16-bit length then its bytes: ISO/IEC 14496-15 5.3.3.1.2
    sequenceParameterSetLength and 8.3.3.1.2 nalUnitLength."""
    out = bytearray()
    for nal in nals:
        if not 0 < len(nal) <= _MAX_NAL:
            raise ProbeError(f"a NAL unit of {len(nal)} bytes does not fit a configuration")
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def _check_types(nals: Sequence[bytes], codec: str, wanted: int, name: str, most: int) -> None:
    if not nals:
        raise ProbeError(f"no {name}")
    if len(nals) > most:
        raise ProbeError(f"{len(nals)} {name}s do not fit a configuration")
    for nal in nals:
        if nal_type(nal, codec) != wanted:
            raise ProbeError(f"NAL unit of type {nal_type(nal, codec)} given as a {name}")


def avc_config(sps: Sequence[bytes], pps: Sequence[bytes]) -> tuple[bytes, int, int]:
    """The AVCDecoderConfigurationRecord (the avcC box's payload) for these parameter sets
    with 4-byte NAL lengths, and the width and height of the first SPS after cropping.

    ISO/IEC 14496-15 5.3.3.1.2: configurationVersion 1, AVCProfileIndication,
    profile_compatibility, AVCLevelIndication (the SPS's profile_idc, constraint flags and
    level_idc, H.264 7.3.2.1.1), '111111'b + lengthSizeMinusOne, '111'b +
    numOfSequenceParameterSets, the SPSs, numOfPictureParameterSets, the PPSs; then for
    profiles other than 66, 77 and 88 '111111'b + chroma_format, '11111'b +
    bit_depth_luma_minus8, '11111'b + bit_depth_chroma_minus8 and
    numOfSequenceParameterSetExt 0."""
    _check_types(sps, "h264", _AVC_SPS, "SPS", 31)  # 5 bits of count
    _check_types(pps, "h264", _AVC_PPS, "PPS", 255)
    first = _avc_sps(sps[0])
    record = bytearray(
        [1, first.profile_idc, first.constraint_flags, first.level_idc, 0xFC | 3, 0xE0 | len(sps)]
    )
    record += _length_prefixed(sps)
    record.append(len(pps))
    record += _length_prefixed(pps)
    if first.profile_idc not in _AVC_PROFILES_WITHOUT_EXTENSION:
        record += bytes(
            [
                0xFC | first.chroma_format_idc,
                0xF8 | first.bit_depth_luma_minus8,
                0xF8 | first.bit_depth_chroma_minus8,
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return bytes(record), first.width, first.height


@dataclass(frozen=True)
class _HevcSps:
    max_sub_layers_minus1: int
    temporal_id_nesting: int
    general_profile: bytes  # profile_space..general_level_idc: 12 bytes, as hvcC stores them
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int
    width: int
    height: int


def _hevc_profile_tier_level(bits: BitReader, max_sub_layers_minus1: int) -> bytes:
    """H.265 7.3.3 profile_tier_level(1, maxNumSubLayersMinus1): the 12 general bytes
    (profile space, tier, profile_idc, 32 compatibility flags, 48 bits of constraint flags,
    general_level_idc), with the sub-layer fields skipped."""
    general = bits.u(96).to_bytes(12, "big")
    present = [(bits.flag(), bits.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            bits.skip(88)  # sub_layer_profile_space .. sub_layer_inbld_flag
        if level_present:
            bits.skip(8)  # sub_layer_level_idc
    return general


def _hevc_sps(nal: bytes) -> _HevcSps:
    """The fields of an H.265 seq_parameter_set_rbsp() (7.3.2.2.1) that hvcC and the
    picture size need, read through bit_depth_chroma_minus8."""
    if len(nal) < 3 or nal[0] & 0x80 or nal_type(nal, "hevc") != _HEVC_SPS:
        raise ProbeError("not an HEVC SPS")
    bits = BitReader(unescape(nal)[2:])  # 7.3.1.2: two bytes of NAL unit header
    bits.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = bits.u(3)
    if max_sub_layers_minus1 > 6:  # 7.4.3.2.1
        raise ProbeError(f"sps_max_sub_layers_minus1 {max_sub_layers_minus1} out of range")
    temporal_id_nesting = bits.u(1)
    general = _hevc_profile_tier_level(bits, max_sub_layers_minus1)
    bits.ue_max(15, "sps_seq_parameter_set_id")
    chroma_format_idc = bits.ue_max(3, "chroma_format_idc")
    if chroma_format_idc == 3:
        bits.skip(1)  # separate_colour_plane_flag: SubWidthC and SubHeightC are 1 either way
    width, height = bits.ue(), bits.ue()  # pic_width/height_in_luma_samples
    left = right = top = bottom = 0
    if bits.flag():  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    # hvcC keeps 3 bits of each bit depth; H.265 7.4.3.2.1 allows up to 8 (16 bits).
    bit_depth_luma_minus8 = bits.ue_max(7, "bit_depth_luma_minus8")
    bit_depth_chroma_minus8 = bits.ue_max(7, "bit_depth_chroma_minus8")
    # 7.4.3.2.1 conf_win_*_offset count in chroma samples: Table 6-1 SubWidthC, SubHeightC.
    sub_width, sub_height = _SUBSAMPLING[chroma_format_idc]
    width, height = _check_size(
        width - sub_width * (left + right), height - sub_height * (top + bottom)
    )
    return _HevcSps(
        max_sub_layers_minus1,
        temporal_id_nesting,
        general,
        chroma_format_idc,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        width,
        height,
    )


def hevc_config(
    vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]
) -> tuple[bytes, int, int]:
    """The HEVCDecoderConfigurationRecord (the hvcC box's payload) for these parameter sets
    with 4-byte NAL lengths and complete arrays (as an hvc1 sample entry requires), and the
    width and height of the first SPS after its conformance window.

    ISO/IEC 14496-15 8.3.3.1.2: configurationVersion 1; general_profile_space, tier,
    profile_idc, profile_compatibility_flags, constraint_indicator_flags and level_idc from
    the SPS's profile_tier_level (H.265 7.3.3); '1111'b + min_spatial_segmentation_idc 0;
    '111111'b + parallelismType 0 (both 'unknown'); '111111'b + chromaFormat; '11111'b +
    bitDepthLumaMinus8; '11111'b + bitDepthChromaMinus8; avgFrameRate 0;
    constantFrameRate 0, numTemporalLayers (sps_max_sub_layers_minus1 + 1),
    temporalIdNested (sps_temporal_id_nesting_flag), lengthSizeMinusOne 3; numOfArrays 3,
    each array_completeness 1, reserved 0, NAL_unit_type, numNalus and the NAL units."""
    _check_types(vps, "hevc", _HEVC_VPS, "VPS", 16)  # H.265 7.4.3.1: ids 0 to 15
    _check_types(sps, "hevc", _HEVC_SPS, "SPS", 16)
    _check_types(pps, "hevc", _HEVC_PPS, "PPS", 64)
    first = _hevc_sps(sps[0])
    record = bytearray([1])
    record += first.general_profile
    record += bytes(
        [
            0xF0,  # reserved '1111'b, min_spatial_segmentation_idc 0 (high 4 of 12 bits)
            0x00,
            0xFC,  # reserved '111111'b, parallelismType 0
            0xFC | first.chroma_format_idc,
            0xF8 | first.bit_depth_luma_minus8,
            0xF8 | first.bit_depth_chroma_minus8,
            0x00,  # avgFrameRate 0 (16 bits)
            0x00,
            # constantFrameRate 0 (2 bits), numTemporalLayers (3), temporalIdNested (1),
            # lengthSizeMinusOne 3 (2)
            ((first.max_sub_layers_minus1 + 1) << 3) | (first.temporal_id_nesting << 2) | 3,
            3,  # numOfArrays
        ]
    )
    for kind, nals in ((_HEVC_VPS, vps), (_HEVC_SPS, sps), (_HEVC_PPS, pps)):
        record.append(0x80 | kind)  # array_completeness 1, reserved 0, NAL_unit_type
        record += len(nals).to_bytes(2, "big")  # numNalus
        record += _length_prefixed(nals)
    return bytes(record), first.width, first.height


def aac_config(adts_header: bytes) -> tuple[bytes, int, int]:
    """The 2-byte AudioSpecificConfig, sample rate in Hz and channel count of an ADTS
    stream, from a frame's fixed header.

    Reads ISO/IEC 13818-7 6.2.1 adts_fixed_header (also ISO/IEC 14496-3 1.A.2.2.1):
    syncword, layer, profile_ObjectType, sampling_frequency_index and
    channel_configuration. Writes ISO/IEC 14496-3 1.6.2.1 AudioSpecificConfig:
    audioObjectType (profile_ObjectType + 1, 5 bits), samplingFrequencyIndex (4),
    channelConfiguration (4), then 4.4.1 GASpecificConfig frameLengthFlag 0 (1024
    samples), dependsOnCoreCoder 0 and extensionFlag 0."""
    if len(adts_header) < 7:
        raise ProbeError("ADTS header is truncated")
    if adts_header[0] != 0xFF or adts_header[1] & 0xF6 != 0xF0:  # syncword, layer '00'
        raise ProbeError("not an ADTS header")
    object_type = (adts_header[2] >> 6) + 1
    rate_index = (adts_header[2] >> 2) & 0x0F
    channel_config = ((adts_header[2] & 1) << 2) | (adts_header[3] >> 6)
    if rate_index >= len(_AAC_RATES):
        raise ProbeError(f"reserved sampling_frequency_index {rate_index}")
    if channel_config == 0:
        raise ProbeError("channel_configuration 0 (channels in a PCE) is not supported")
    config = (object_type << 11) | (rate_index << 7) | (channel_config << 3)
    return config.to_bytes(2, "big"), _AAC_RATES[rate_index], _AAC_CHANNELS[channel_config]


def _descriptor(tag: int, body: bytes) -> bytes:
    """ISO/IEC 14496-1 8.3.3 expandable class: the tag, then sizeOfInstance in the 4-byte
    form (nextByte set in the first three), as ffmpeg's movenc writes it."""
    size = len(body)
    if size >= 1 << 28:
        raise ProbeError(f"a descriptor of {size} bytes is too large")
    groups = [0x80 | (size >> shift) & 0x7F for shift in (21, 14, 7)]
    return bytes([tag, *groups, size & 0x7F]) + body


def esds_payload(config: bytes, bitrate: int = 0) -> bytes:
    """The esds box's payload after its version and flags (ISO/IEC 14496-14 3.1.2) for an
    AAC stream with this AudioSpecificConfig.

    ISO/IEC 14496-1 7.2.6.5 ES_Descriptor (tag 3): ES_ID 0 (ISO/IEC 14496-14 3.1.2 has it
    0 as stored, the track ID standing for it),
    streamDependenceFlag, URL_Flag and OCRstreamFlag 0, streamPriority 0; 7.2.6.6
    DecoderConfigDescriptor (tag 4): objectTypeIndication 0x40 (Audio ISO/IEC 14496-3),
    streamType 5 (audio) << 2 | upStream 0 << 1 | reserved 1, bufferSizeDB 0, maxBitrate
    and avgBitrate `bitrate`; 7.2.6.7 DecoderSpecificInfo (tag 5) holding `config`; 7.3.2.3
    SLConfigDescriptor (tag 6) with predefined 2 (reserved for MP4 files)."""
    if not 0 <= bitrate < 1 << 32:
        raise ValueError(f"bitrate {bitrate} does not fit 32 bits")
    decoder_config = (
        bytes([0x40, (5 << 2) | 1])
        + (0).to_bytes(3, "big")  # bufferSizeDB
        + bitrate.to_bytes(4, "big")  # maxBitrate
        + bitrate.to_bytes(4, "big")  # avgBitrate
        + _descriptor(0x05, bytes(config))
    )
    es = (
        (0).to_bytes(2, "big")  # ES_ID
        + b"\x00"  # flags, streamPriority
        + _descriptor(0x04, decoder_config)
        + _descriptor(0x06, b"\x02")
    )
    return _descriptor(0x03, es)


def config_parameter_sets(entry: bytes) -> bytes:
    """The parameter set NAL units of a video sample entry's avcC or hvcC, each after a
    4-byte length, as they would open an access unit in band; b"" if there is no such
    box or it is cut short (ISO/IEC 14496-15 5.3.3.1 AVCDecoderConfigurationRecord,
    8.3.3.1 HEVCDecoderConfigurationRecord)."""
    found: list[bytes] = []
    try:
        at = entry.find(b"avcC")
        if at >= 4:
            end = at - 4 + int.from_bytes(entry[at - 4 : at], "big")
            p = at + 4 + 5
            for count_mask in (0x1F, 0xFF):  # SPS (low 5 bits of its count byte), then PPS
                count = entry[p] & count_mask
                p += 1
                for _ in range(count):
                    length = int.from_bytes(entry[p : p + 2], "big")
                    found.append(entry[p + 2 : p + 2 + length])
                    p += 2 + length
        else:
            at = entry.find(b"hvcC")
            if at < 4:
                return b""
            end = at - 4 + int.from_bytes(entry[at - 4 : at], "big")
            p = at + 4 + 22
            arrays = entry[p]
            p += 1
            for _ in range(arrays):
                count = int.from_bytes(entry[p + 1 : p + 3], "big")
                p += 3
                for _ in range(count):
                    length = int.from_bytes(entry[p : p + 2], "big")
                    found.append(entry[p + 2 : p + 2 + length])
                    p += 2 + length
        if p > end or p > len(entry):
            return b""
    except IndexError:
        return b""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in found if unit)


def served_tag(tag: str) -> str:
    """The sample entry a video is served with: HEVC's `hev1` named `hvc1`, the one
    Safari plays (ISO/IEC 14496-15 8.4.1: the same stream, parameter sets also in band);
    any other as it is."""
    return "hvc1" if tag == "hev1" else tag


def codec_name(tag: str, record: bytes) -> str:
    """The RFC 6381 name of a video stream whose sample entry is `tag` (avc1, avc3, hvc1,
    hev1) from its decoder configuration record (the body of its avcC or hvcC):
    `avc1.PPCCLL`; `hvc1.[A-C]P.C.TL.CC...` (profile space and profile, the compatibility
    flags in reverse bit order, tier and level, the constraint bytes but trailing zeros:
    ISO/IEC 14496-15 E.3); "" if the record is cut short or the codec is neither.

    ISO/IEC 14496-15 5.3.3.1 AVCDecoderConfigurationRecord (AVCProfileIndication,
    profile_compatibility, AVCLevelIndication), 8.3.3.1 HEVCDecoderConfigurationRecord."""
    if tag in ("avc1", "avc3") and len(record) >= 4:
        return f"{tag}.{record[1]:02x}{record[2]:02x}{record[3]:02x}"
    if tag not in ("hvc1", "hev1") or len(record) < 13:
        return ""
    space, tier, profile = record[1] >> 6, record[1] >> 5 & 1, record[1] & 0x1F
    flags = int(f"{int.from_bytes(record[2:6], 'big'):032b}"[::-1], 2)  # bits reversed
    constraints = record[6:12].rstrip(b"\0")
    name = f"{tag}.{'ABC'[space - 1] if space else ''}{profile}.{flags:x}.{'LH'[tier]}{record[12]}"
    return name + "".join(f".{byte:02x}" for byte in constraints)


_ENTRY_CHILDREN = 8 + 78  # a visual sample entry's box header and fields, then its boxes


def decoder_config(entry: bytes) -> tuple[str, bytes] | None:
    """A video sample entry's codec name (`codec_name`) and its decoder configuration
    record (avcC, hvcC), or None for another codec or a record cut short. The entry's
    child boxes follow its 78 bytes of VisualSampleEntry fields (ISO/IEC 14496-12
    12.1.3)."""
    at = _ENTRY_CHILDREN
    while at + 8 <= len(entry):
        size = int.from_bytes(entry[at : at + 4], "big")
        if size < 8 or at + size > len(entry):
            return None
        if entry[at + 4 : at + 8] in (b"avcC", b"hvcC"):
            record = entry[at + 8 : at + size]
            name = codec_name(entry[4:8].decode("latin-1"), record)
            return (name, record) if name else None
        at += size
    return None


def _expandable(data: bytes, at: int) -> tuple[int, int, int]:
    """A descriptor's tag, where its body starts and where it ends (ISO/IEC 14496-1
    8.3.3 expandable size: 7 bits a byte, the high bit saying that another follows)."""
    tag, length, at = data[at], 0, at + 1
    for _ in range(4):
        byte = data[at]
        at += 1
        length = length << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    return tag, at, at + length


def audio_specific_config(entry: bytes) -> bytes | None:
    """The AudioSpecificConfig in an mp4a entry's esds, if it can be found (ISO/IEC
    14496-1 7.2.6.5 ES_Descriptor: after ES_ID and its flags, dependsOn_ES_ID if
    streamDependenceFlag (0x80), the URL if URL_Flag (0x40), OCR_ES_Id if OCRstreamFlag
    (0x20); 7.2.6.6 DecoderConfigDescriptor; 7.2.6.7 DecoderSpecificInfo)."""
    at = entry.find(b"esds")
    if at < 4:
        return None
    try:
        tag, body, _ = _expandable(entry, at + 8)  # after the full box's version and flags
        if tag != 0x03:
            return None
        flags = entry[body + 2]
        body += 3 + (2 if flags & 0x80 else 0)
        if flags & 0x40:
            body += 1 + entry[body]
        body += 2 if flags & 0x20 else 0
        tag, body, _ = _expandable(entry, body)
        if tag != 0x04:
            return None
        tag, body, end = _expandable(entry, body + 13)
        if tag != 0x05 or end > len(entry):
            return None
        return entry[body:end]
    except IndexError:
        return None


def audio_name(entry: bytes) -> str:
    """The RFC 6381 name of an AAC stream, `mp4a.40.` and its audio object type (ISO/IEC
    14496-3 1.6.2.1 AudioSpecificConfig: its first 5 bits), from its sample entry's
    esds; "" if the entry does not say."""
    config = audio_specific_config(entry)
    if not config or not config[0] >> 3 or config[0] >> 3 == 31:  # 31: an escape
        return ""
    return f"mp4a.40.{config[0] >> 3}"
