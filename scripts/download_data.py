"""Rule script of download_data (local rule): fetch a MedMNIST file into data_dir and check it.

pepr.datasets.core.load_dataset downloads a missing MedMNIST file through the medmnist package and then
validates it; offline it raises PeprInputError saying which file to put where.
"""

from pathlib import Path

from pepr.datasets.core import load_dataset

data = load_dataset(snakemake.params.spec, data_dir=Path(snakemake.params.data_dir), allow_download=True)
with open(snakemake.log[0], "w", encoding="utf-8") as log:
    print(f"{snakemake.output[0]}: {data.description}", file=log)
