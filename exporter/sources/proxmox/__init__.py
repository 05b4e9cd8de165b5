"""Proxmox VE source: vzdump archives, backup jobs, vzdump tasks and retention, via proxmoxer."""

KIND = "proxmox"
