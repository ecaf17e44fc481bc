<?php
// MAC web node self-check (the watchdog probes it): 200 while Apache and PHP serve this page and
// the app's config is readable, whatever the DB does. It never connects to the DB itself (a silent
// DB host would hold it past the watchdog's probe timeout): `degraded` reports the latest
// /health.php outcome, which HAProxy's checks refresh every 500 ms, while it is recent.
declare(strict_types=1);
require __DIR__ . '/lib/db.php';

const DB_STATE_FRESH_S = 5.0;

if (!mac_config()) {
    mac_json(503, ['degraded' => null, 'error' => 'the app config is unreadable']);
    exit;
}
$db = mac_db_state(DB_STATE_FRESH_S);
if ($db === null) {
    mac_json(200, ['degraded' => null, 'db' => 'unknown (no recent /health.php check)']);
} elseif ($db['ok']) {
    mac_json(200, ['degraded' => null, 'db' => $db['detail']]);
} else {
    mac_json(200, ['degraded' => 'no DB host answers: ' . $db['detail'], 'db' => 'down']);
}
