"""Data stages, in the order data flows: corpus -> prepare/shards -> mixer -> packer -> loader."""
