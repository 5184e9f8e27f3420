"""The decision domain: pings, gates, presence, schedules, caps, records, engine (no Kafka)."""

from geofences.native import use_fresh_modules

use_fresh_modules()
