"""Headless execution of Diorama workflows through ComfyUI's own executor."""
