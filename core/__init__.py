"""The torch-free core every layer builds on, and all that clients and the server's python models import:
the preprocessing and its one executor, image and video IO, folder formats and class names, tensor names,
the centroid set and export manifest artefacts, atomic staging, and the project's errors."""
