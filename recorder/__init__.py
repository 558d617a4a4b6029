"""Encrypted consultation recordings (at rest), their keys and the audit log.

Data directory layout (the same `--data-dir` as run.py):

    recording.kek            key-encryption key, 0600 (unless CONSULT_RECORDING_KEK is set)
    recording.kek.next       only while a rotation is unfinished
    audit.key                HMAC key of the audit log, 0600 (unless CONSULT_AUDIT_KEY is set)
    audit.log, audit.head    hash-chained audit entries; the MACed latest (seq, hash)
    recordings/<id>/         one directory per recording (0700), id = <UTC start>-<random>
        manifest.json        created, room, tracks (kind, codec, clock rate, file), -> key.json; MACed
        key.json             the recording's data key, wrapped (AES-256-GCM) under the KEK
        track-0.seg          events (joins, annotations, analysis), encrypted like media
        track-N.seg          encoded frames of media track N, in AES-256-GCM segments
        writer.lock          flock'ed by the live writer
    replay-cache/            watermarked replays rendered per (recording, track, trainer), 0700;
                             files 0600, encrypted under a key only the running server holds;
                             wiped at start-up, expired an hour after last use, removed by purge

Entry points: RecordingWriter (writer.py) records; RecordingReader (reader.py) reads and
verifies; RecordingStore (store.py) lists, opens for replay/export with auditing,
purges and rotates; `python -m recorder` is the operator's CLI.
"""
