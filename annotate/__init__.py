"""Live annotation over the patient's video: shapes and their validation (model.py,
limits.py), the per-room board of operations and snapshots (board.py), face anchoring
(anchoring.py), what the live pages are sent to draw face-anchored marks (face_relay.py)
and the server-side renderer with the drawing spec (render.py).

Nothing here imports signalling/: the control plane calls AnnotationBoard.apply with a
decoded message and relays the JSON-ready event. model.py, limits.py and board.py do
not import mediapipe or OpenCV, so the signalling path stays light.
"""
