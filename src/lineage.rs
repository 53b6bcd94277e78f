//! Run records and lineage walks (upstream / downstream, dot / mermaid / json).
