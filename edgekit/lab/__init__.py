"""Lab back ends (local nspawn containers, Vagrant VMs) behind one small interface."""
