<?php
// MAC app: record a visit and show the count. `?token=` makes the write idempotent, so a
// retried request (by the app or by HAProxy) never counts twice.
declare(strict_types=1);
require __DIR__ . '/lib/db.php';

$token = isset($_GET['token']) ? substr((string) $_GET['token'], 0, 64) : null;
$node = (string) (mac_config()['node'] ?? gethostname());
try {
    [$count, $host] = mac_with_db(function (mysqli $db) use ($token, $node): int {
        $db->begin_transaction();
        $insert = $db->prepare('INSERT IGNORE INTO visits (token, web) VALUES (?, ?)');
        $insert->bind_param('ss', $token, $node);
        $insert->execute();
        if ($insert->affected_rows === 1) {
            $db->query('UPDATE visit_count SET n = n + 1 WHERE id = 1');
        }
        $row = $db->query('SELECT n FROM visit_count WHERE id = 1')->fetch_row();
        $db->commit();
        return (int) $row[0];
    }, (float) (mac_config()['retry_budget_s'] ?? 4.0));
    mac_json(200, ['count' => $count, 'token' => $token, 'web' => $node, 'db' => $host]);
} catch (Throwable $e) {
    mac_json(503, ['error' => $e->getMessage(), 'web' => $node]);
}
