"""The fixed English text set the benchmarks speak."""

HELLO = "Hello there."
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in the "
    "salty wind. Every evening the keeper climbed the spiral stairs to light the lamp. "
    "Ships passing in the night relied on its steady beam to find their way home. "
    "Nobody in the village could remember a single night when the light had failed."
)
LONG = " ".join([PARAGRAPH] * 3)
# The throughput runs speak this shorter text (16 requests per level and per path).
MEDIUM = ("Every evening the keeper climbed the spiral stairs to light the lamp. "
          "Ships passing in the night relied on its steady beam.")
TEXT_SET = {"hello": HELLO, "paragraph": PARAGRAPH}
