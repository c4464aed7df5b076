<?php
// The demo IdP's people. Gatehouse maps mail, displayName and groups (deploy/gatehouse.toml);
// uid becomes the persistent NameID (saml20-idp-hosted.php).
$config = [
    'admin' => ['core:AdminPassword'],
    'demo-users' => [
        'exampleauth:UserPass',
        'dana:dana-password' => [
            'uid' => ['dana'],
            'mail' => ['dana@corp.example'],
            'displayName' => ['Dana Corp'],
            'groups' => ['engineering', 'sre'],
        ],
        'erik:erik-password' => [
            'uid' => ['erik'],
            'mail' => ['erik@corp.example'],
            'displayName' => ['Erik Corp'],
            'groups' => ['sales', 'managers'],
        ],
    ],
];
