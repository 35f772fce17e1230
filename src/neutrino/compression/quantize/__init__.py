"""Weight quantization methods: round-to-nearest, GPTQ, AWQ and SmoothQuant (W8A8), and the integer grid and
checkpoint packing they share (`grid`)."""
