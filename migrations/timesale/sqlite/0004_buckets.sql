-- A campaign's or sale's counters split over this many buckets (1-256;
-- docs/architecture.md, Buckets).
ALTER TABLE sales ADD COLUMN buckets INTEGER NOT NULL DEFAULT 1;
