"""Tests of the generation backends (program, hf, openai against a real local HTTP server, vllm settings)."""
