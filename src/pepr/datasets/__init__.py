"""Datasets: the dataset specs pepr accepts (MedMNIST, npz, synthetic, image folders and manifests)."""
