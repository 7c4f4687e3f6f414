"""The container readers and rewriters: MPEG-TS (ISO/IEC 13818-1) and MP4 (ISO/IEC
14496-12, with 14496-15 for the AVC and HEVC sample entries).

Pure code on bytes and file descriptors: it imports nothing of the agent but its own
error type, `ProbeError`, so that it can be read, tested and fuzzed alone.
- `mpegts`: packets, PAT/PMT, PES timestamps, the in-flight timestamp and counter rewrite;
- `mp4`: boxes, sample tables, fragments, decode times moved in flight;
- `probe`: a recording's facts for the index (duration, codec, streams, keyframes).
"""
