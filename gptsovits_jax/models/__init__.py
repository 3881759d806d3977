"""Flax linen modules of GPT-SoVITS v2: GPT decoder, SoVITS synthesizer, HiFi-GAN and discriminators."""
