<?php
// The front controller of the tests: routes on the request path as
// Laravel's public/index.php does.
while (ob_get_level()) { ob_end_flush(); }
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
switch ($path) {
case '/created':
    http_response_code(201);
    header('Location: /users/7');
    header('X-From: php');
    echo "made";
    break;
case '/boom':
    http_response_code(500);
    echo "boom";
    break;
case '/stream':
    header('Content-Type: text/plain');
    echo "first\n";
    flush();
    // The last chunk waits for the test to see the first one.
    $go = $_GET['go'];
    for ($i = 0; $i < 1000 && !file_exists($go); $i++) { usleep(10000); }
    echo "last\n";
    break;
case '/bigheader':
    header('X-Big: ' . str_repeat('a', 2 << 20));
    echo "big";
    break;
case '/stderr':
    error_log("note from php");
    echo "logged";
    break;
default:
    header('Content-Type: application/json');
    $keys = ['REQUEST_URI', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO', 'QUERY_STRING',
        'REQUEST_METHOD', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'DOCUMENT_ROOT', 'REMOTE_ADDR',
        'HTTPS', 'REQUEST_SCHEME', 'SERVER_PROTOCOL', 'HTTP_X_TEST', 'HTTP_PROXY', 'APP_ENV', 'SERVER_NAME'];
    $out = ['pid' => getmypid(), 'get' => (object)$_GET];
    foreach ($keys as $k) { $out[$k] = $_SERVER[$k] ?? null; }
    $body = file_get_contents('php://input');
    $out['body_len'] = strlen($body);
    $out['body_md5'] = md5($body);
    echo json_encode($out);
}
