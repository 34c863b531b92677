"""Offline calibration: good images -> PatchCore coreset + threshold -> model directory."""
