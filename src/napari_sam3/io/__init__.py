"""Readers and exporters (TIFF, PNG, COCO, training pairs, tables); every write is atomic."""
