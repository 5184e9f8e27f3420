"""The geofence domain: catalog, geodesy, fence shapes and the H3 + shapely index (no Kafka)."""

from geofences.native import use_fresh_modules

use_fresh_modules()
