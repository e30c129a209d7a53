"""The Ray launcher of conf/hydra/launcher/ray.yaml: hydra-ray-launcher on a private loopback cluster."""
