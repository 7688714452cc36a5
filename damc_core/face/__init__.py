"""Face preparation: 68-point landmarks, face parsing, head pose and camera, eye blinks."""
