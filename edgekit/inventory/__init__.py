"""The inventory: edge.yaml's model, its validation, and loading."""

from edgekit.inventory.checks import maxconn_refusal
from edgekit.inventory.load import (
    InventoryError,
    Loaded,
    Secrets,
    load_inventory,
    parse_peers_flag,
)
from edgekit.inventory.model import Inventory

__all__ = [
    "Inventory",
    "InventoryError",
    "Loaded",
    "Secrets",
    "load_inventory",
    "maxconn_refusal",
    "parse_peers_flag",
]
