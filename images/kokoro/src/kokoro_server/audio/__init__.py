"""Audio floor: stitching chunk audio and encoding it to the response formats."""
