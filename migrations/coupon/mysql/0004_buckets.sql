-- A campaign's or sale's counters split over this many buckets (1-256;
-- docs/architecture.md, Buckets).
ALTER TABLE campaigns ADD COLUMN buckets INT NOT NULL DEFAULT 1;
