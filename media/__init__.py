"""The media plane: forwards RTP between participants without decoding.

Nothing here imports signalling/, annotate/ or recorder/ and nothing parses JSON;
the control plane drives this package through media.room.MediaRoom and hears back
through its RoomMediaEvents protocol.
"""
