"""Face analysis for the patient's camera: landmarks, pose and image quality metrics,
and the guidance prompts built on them.

Pure functions and small classes over decoded frames (BGR uint8, H x W x 3, as
media.processing delivers them and OpenCV expects), meant to run in worker threads
off the event loop at a few frames per second. Nothing here touches packets,
sessions or the forwarding path.

    face_model      where face_landmarker.task comes from, checksum-verified
    face_landmarks  FaceLandmarkDetector: MediaPipe FaceLandmarker -> numpy arrays
    head_pose       yaw / pitch / roll from the facial transformation matrix
    framing         face size and centring offset
    image_quality   sharpness, exposure (face), colour cast (frame)
    analysis        analyze_frame: all of the above for one frame
    guidance        Guidance: metrics -> one steady prompt; pose_reached for captures
    prompts         prompt keys and their English / Chinese texts
"""
