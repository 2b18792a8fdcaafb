"""The inventory: edge.yaml's model, its validation, and loading."""

from edgekit.inventory.load import Loaded, Secrets, load_inventory, parse_peers_flag
from edgekit.inventory.model import Inventory

__all__ = ["Inventory", "Loaded", "Secrets", "load_inventory", "parse_peers_flag"]
