"""jot: unpaired image-to-image translation with optimal transport and diffusion, in JAX."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.6",
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ott-jax>=0.5",
    "ml-collections>=1.0",
    "absl-py>=2.0",
    "numpy>=1.26",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "safetensors>=0.4",
    "tokenizers>=0.19",
    "pillow>=10.0",
    "scikit-learn>=1.4",
    "grain>=0.2.10",
]

TEST = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "chex>=0.1.88",
    "POT>=0.9.4",
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
    "tensorflow-datasets>=4.9.10",  # tfds.data_source + mock_data; TensorFlow itself is not needed
    # CPU PyTorch and the reference implementations the ported networks are checked against.
    "torch==2.13.0",
    "diffusers>=0.40",
    "transformers>=5.0",
]

setup(
    name="jot",
    version="0.1.0",
    description="Unpaired image-to-image translation with optimal transport and diffusion models, in JAX/Flax.",
    packages=find_packages(include=["jot", "jot.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"test": TEST},
)
