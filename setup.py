"Package metadata and requirements come from settings.ini (nbdev 2 convention)."
from configparser import ConfigParser

import setuptools

assert setuptools.__version__ >= "36.2"
config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

expected = (
    "version description keywords author author_email license status min_python "
    "audience language lib_name lib_path user git_url".split()
)
missing = [o for o in expected if o not in cfg]
if missing:
    raise SystemExit(f"settings.ini is missing {missing}")

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature",
            "7 - Inactive"]
py_versions = "3.10 3.11 3.12 3.13".split()
min_python = cfg["min_python"]
lic = licenses[cfg["license"].lower()]


def reqs(key):
    "The whitespace-separated requirements under `key` in settings.ini."
    return cfg.get(key, "").split()


setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic[0],
    url=cfg["git_url"],
    keywords=cfg["keywords"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"].title(),
        "License :: " + lic[1],
        "Natural Language :: " + cfg["language"].title(),
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ]
    + [f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(min_python):]],
    # Namespace discovery lists data folders such as rnn_tutorial/results (no __init__.py) as packages too, so
    # setuptools ships them on purpose rather than warning that a later version will leave them out.
    packages=setuptools.find_namespace_packages(
        include=[cfg["lib_path"], cfg["lib_path"] + ".*"], exclude=["*.__pycache__"]
    ),
    package_data={cfg["lib_path"]: ["results/*.json", "results/*.npz"]},
    include_package_data=True,
    python_requires=">=" + min_python,
    install_requires=reqs("requirements"),
    extras_require={"dev": reqs("dev_requirements"), "gpu": reqs("gpu_requirements")},
    entry_points={
        "console_scripts": reqs("console_scripts"),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
