"""Tests of teacher data generation (`hpt generate`), filtering, SFT sets and DPO pairs."""
