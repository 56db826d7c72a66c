"""rstar_jax: rStar2-Agent (agentic RL with a Python tool, GRPO-RoC) in JAX.

This file imports nothing, so that level-0 packages (sandbox, chat, rewards) can be
imported on CPU-only hosts without loading JAX. See DESIGN.md for the layers.
"""
